"""Build and load the custom-op libraries, against the TensorFlow that is actually imported.

Each op family lives in custom_ops/<family>/: `*.cc` (kernels + TF wrappers, always built), `*.cu.cc` (CUDA
kernels, built when nvcc is present and CUDA is wanted) and `harness*.cu` (the TF-free test harness, never part
of the library). The compiled `.so` is cached under ~/.cache/tfmodels/ops (or $TFMODELS_OPS_CACHE), keyed by
the TensorFlow version, the compile flags and a hash of the sources, so a TF upgrade or a source change
rebuilds it. A file lock keeps parallel processes (pytest-xdist) from building the same library twice.

A sanitizer build (`TFMODELS_OPS_SANITIZE=address,undefined`, or the `sanitize` argument of `compile_library`,
`OpLibrary.build` and `build_all`) compiles with AddressSanitizer and/or UndefinedBehaviorSanitizer into its own
cache folder, so it never mixes with the normal build. A Python that is not itself built with ASan loads such a
library only with the ASan runtime preloaded: `sanitizer_environment()` gives the environment a subprocess needs.

An installed wheel also carries compiled CPU libraries (tfmodels/_compiled_ops, built by setup.py through
`build_prebuilt`) for two CPU targets; `load()` takes the one this CPU runs when it was built for the imported
TensorFlow, so such an install needs no compiler. Anything else (a source or editable install, a CPU below the
portable target, another TensorFlow, CUDA wanted) compiles from the sources on first use, as above.

Nothing here raises on a missing compiler: `load()` records why a library is unavailable, and the dispatch
(tfmodels.ops.dispatch) decides whether that is an error ("custom" mode) or a warning and the pure-TF twin
("auto" mode).
"""
import fcntl
import functools
import glob
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

# Not tfmodels.core.logging's import: setup.py loads this file on its own (importing the tfmodels package would
# import every model, and their dependencies, into the wheel build). The logger is the same one by name.
logger = logging.getLogger("tfmodels")

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SOURCE_ROOTS = [os.path.join(os.path.dirname(_PACKAGE_DIR), "custom_ops"),  # a checkout / editable install
                 os.path.join(_PACKAGE_DIR, "_custom_ops")]                  # an installed wheel
COMPILED_DIR = os.path.join(_PACKAGE_DIR, "_compiled_ops")                   # an installed wheel's libraries
WARNING_FLAGS = ["-Wno-deprecated-declarations", "-Wno-interference-size", "-Wno-ignored-attributes"]
HEADER_PATTERNS = ("*.h", "*.hpp", "*.cuh", "*.inc")
NVCC_ARCHS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]

# The sanitizers a build may use, and the flags they take: every finding aborts (no recovery), so a run that
# meets one cannot pass. -O1 keeps the compile short and the stack traces readable.
SANITIZERS = ("address", "undefined")
SANITIZER_FLAGS = ["-fno-omit-frame-pointer", "-fno-sanitize-recover=all", "-O1", "-g1"]
# ASan's runtime must come first in the process (LD_PRELOAD); leaks are not checked because TensorFlow keeps its
# registries alive until exit, and the link order check would refuse the preloaded runtime.
ASAN_OPTIONS = "detect_leaks=0:verify_asan_link_order=0:abort_on_error=1"
UBSAN_OPTIONS = "print_stacktrace=1:halt_on_error=1"

# The CPU targets a wheel carries, best first, with the /proc/cpuinfo flags a CPU needs to run each: the x86-64
# psABI levels. x86-64-v4 (AVX-512 F/BW/CD/DQ/VL) runs on Intel Xeon since Skylake-SP and AMD since Zen 4, and
# keeps the AVX-512 kernels (MRA's are about 2.5x faster with them); x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT
# ("abm"), MOVBE) runs on Intel since Haswell and AMD since Zen 1. A CPU below v3 compiles from the sources.
_X86_64_V2_FLAGS = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
_X86_64_V3_FLAGS = _X86_64_V2_FLAGS | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
PREBUILT_TARGETS = {
    "x86-64-v4": _X86_64_V3_FLAGS | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    "x86-64-v3": _X86_64_V3_FLAGS,
}


def source_root():
    override = os.environ.get("TFMODELS_CUSTOM_OPS_DIR")
    if override:
        return override
    for root in _SOURCE_ROOTS:
        if os.path.isdir(root):
            return root
    return None


def cache_dir():
    return os.environ.get("TFMODELS_OPS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tfmodels", "ops"))


def sanitizers(value=None):
    """The sanitizers a build uses, sorted: `value` (a comma-separated string or a sequence of names), or when
    it is None the TFMODELS_OPS_SANITIZE environment variable ("" or unset: none). Raises ValueError on a name
    outside SANITIZERS."""
    if value is None:
        value = os.environ.get("TFMODELS_OPS_SANITIZE", "")
    names = value.split(",") if isinstance(value, str) else list(value)
    names = sorted({name.strip() for name in names if name.strip()})
    unknown = [name for name in names if name not in SANITIZERS]
    if unknown:
        raise ValueError(f"unknown sanitizer(s) {unknown} for the custom ops; choose from {SANITIZERS}")
    return tuple(names)


def sanitizer_compile_flags(names):
    """The g++ flags of a build with these sanitizers (none: []).

    UBSan without its null-pointer checks: with them, g++ 12 no longer evaluates the function-pointer tests of the
    abseil headers TensorFlow ships as constant expressions ("... == 0 is not a constant expression" in
    absl/container/internal/hash_policy_traits.h), and no library compiles. A null dereference still stops the
    process (SIGSEGV, with ASan's report where ASan is on)."""
    if not names:
        return []
    skipped = ["-fno-sanitize=null,nonnull-attribute,returns-nonnull-attribute"] if "undefined" in names else []
    return [f"-fsanitize={','.join(names)}"] + skipped + SANITIZER_FLAGS


def sanitizer_environment(names=SANITIZERS):
    """The environment variables a (non-ASan) Python needs to load libraries built with these sanitizers: the
    ASan runtime preloaded, and options that make every finding abort with a report on stderr."""
    env = {"UBSAN_OPTIONS": UBSAN_OPTIONS}
    if "address" in names:
        # libstdc++ right after it: ASan wraps C++ `throw` and must find the real one when it starts (the python
        # executable does not link libstdc++; without it, the first exception TF throws aborts the process).
        preload = [_runtime_library("libasan.so"), _runtime_library("libstdc++.so")]
        env.update(LD_PRELOAD=" ".join(preload), ASAN_OPTIONS=ASAN_OPTIONS)
    return env


def _runtime_library(name):
    path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        raise RuntimeError(f"g++ does not know where its {name} is (got {path!r}): is the sanitizer runtime "
                           "installed?")
    return path


def cpu_arch():
    """The -march the CPU kernels are built for: native (this CPU) unless TFMODELS_OPS_MARCH names another (e.g.
    x86-64-v3 for a library that must also run on AVX2-only machines, or to test that build on this one),
    optionally followed by g++ feature flags ("znver3 -mavx512f ..." where the g++ is too old to know a CPU by
    name). In an install with compiled libraries, naming one of PREBUILT_TARGETS there loads that one."""
    return os.environ.get("TFMODELS_OPS_MARCH", "native")


def cpu_flags():
    """The CPU's feature flags as Linux reports them (the kernel leaves out what the OS does not enable, such as
    AVX-512 without its register state saved)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        return set()


def prebuilt_target(flags):
    """The best of PREBUILT_TARGETS a CPU with these flags runs, or None."""
    return next((target for target, needed in PREBUILT_TARGETS.items() if needed <= flags), None)


def prebuilt_name(family, target):
    """A wheel library's file name. It names the TensorFlow it was built against: a custom-op library uses TF's
    C++ ABI, which no TF release keeps stable, so it loads only under that exact version."""
    return f"_{family}_ops-tf{tf.__version__}-{target}.so"


def cpu_target_flags(arch=None):
    """The g++ flags that pick the CPU target: `-march=<arch>` (and the feature flags after it), minus AVX512-FP16.

    Why minus FP16: with __AVX512FP16__ defined (-march=native on Sapphire Rapids and later Intel CPUs, or
    -march=sapphirerapids), Eigen turns on its AVX512-FP16 packet math, and the Eigen snapshot TensorFlow 2.21
    bundles cannot compile that file: Eigen/src/Core/arch/AVX512/PacketMathFP16.h specialises
    `predux_half_dowto4`, a template its GenericPacketMath.h no longer declares ("expected initializer before
    '<'"). TensorFlow itself is built without FP16 vectorisation, so its wheel never meets that code. Our kernels
    do no FP16 arithmetic, so dropping the one feature loses nothing and keeps every other extension of the
    target (AVX-512, AMX, ...). A g++ too old to know the flag cannot define __AVX512FP16__ either, so the flag is
    added only where the compiler accepts it.
    """
    march, *features = (arch or cpu_arch()).split()
    return [f"-march={march}"] + features + (["-mno-avx512fp16"] if _compiler_accepts("-mno-avx512fp16") else [])


@functools.lru_cache(maxsize=None)
def _compiler_accepts(flag):
    if shutil.which("g++") is None:
        return False
    probe = subprocess.run(["g++", flag, "-x", "c++", "-E", "-o", os.devnull, os.devnull], capture_output=True)
    return probe.returncode == 0


def cuda_wanted():
    """Build the CUDA kernels into the library? Only useful where TF can see a GPU (or when asked)."""
    setting = os.environ.get("TFMODELS_BUILD_CUDA", "auto")
    if setting in ("0", "false", "no"):
        return False
    have_nvcc = shutil.which("nvcc") is not None and tf.test.is_built_with_cuda()
    if setting in ("1", "true", "yes"):
        return have_nvcc
    return have_nvcc and bool(tf.config.list_physical_devices("GPU"))


def nvcc_command(source, output, include_dirs=(), archs=None):
    """The nvcc command that compiles one TF GPU kernel source (`*.cu.cc`) into an object file.

    nvcc uses its own toolkit's CUDA headers. TF's bundled ones (include/third_party/gpus/cuda/include) belong
    to the CUDA that TF was built with, and their crt/host_runtime.h does not match the kernel-launch stubs a
    newer nvcc generates: with them first on the include path, every file that defines a __global__ kernel fails
    (nvcc 13 vs TF's CUDA 12.5: "macro __cudaLaunch passed 2 arguments, but takes just 1").
    """
    return (["nvcc", "-c", "-x", "cu", "-std=c++17", "--expt-relaxed-constexpr", "-DGOOGLE_CUDA=1",
             "-Xcompiler", "-fPIC", "-O2"] + list(archs or NVCC_ARCHS) + [f"-I{d}" for d in include_dirs]
            + [f for f in tf_compile_flags() if f != "--std=c++17"] + [source, "-o", output])


def tf_compile_flags():
    return list(tf.sysconfig.get_compile_flags())


def tf_link_flags():
    return list(tf.sysconfig.get_link_flags())


def families():
    """The op families: every folder of custom_ops/ with C++ sources (common/ holds shared headers only)."""
    root = source_root()
    if root is None:
        return []
    return [name for name in sorted(os.listdir(root)) if glob.glob(os.path.join(root, name, "*.cc"))]


def family_sources(family):
    """(folder, C++ sources, CUDA sources) of one op family; (None, [], []) where the sources are not installed."""
    root = source_root()
    if root is None:
        return None, [], []
    folder = os.path.join(root, family)
    cc = sorted(f for f in glob.glob(os.path.join(folder, "*.cc")) if not f.endswith(".cu.cc"))
    cu = sorted(glob.glob(os.path.join(folder, "*.cu.cc")))
    return folder, cc, cu


def compile_library(family, output, arch=None, with_cuda=False, sanitize=()):
    """Compile one op family into the shared library `output`, for -march=<arch> (default: cpu_arch()), with the
    sanitizers named in `sanitize` (see `sanitizers`; their flags come last, so their -O1 wins).

    The one compile command: first-use builds, `tfmodels build-ops` and the wheel's libraries (setup.py, through
    build_prebuilt) all come here. Raises RuntimeError naming the first compiler error.
    """
    folder, cc, cu = family_sources(family)
    if not cc:
        raise RuntimeError(_missing_sources(family))
    if shutil.which("g++") is None:
        raise RuntimeError("no C++ compiler (g++) on PATH to build the custom ops")
    include = [f"-I{os.path.dirname(folder)}"]
    # Built in a temporary folder next to `output`, then renamed: a reader never sees a half-written library.
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output))) as tmp_dir:
        objects = []
        if with_cuda:
            for source in cu:
                objects.append(os.path.join(tmp_dir, os.path.basename(source) + ".o"))
                _run(nvcc_command(source, objects[-1], [os.path.dirname(folder)]))
        tmp_output = os.path.join(tmp_dir, os.path.basename(output))
        _run(["g++", "-std=c++17", "-shared", "-fPIC", "-O3"] + cpu_target_flags(arch) + WARNING_FLAGS
             + (["-DGOOGLE_CUDA=1"] if with_cuda else []) + include + cc + objects + ["-o", tmp_output]
             + tf_compile_flags() + tf_link_flags() + (["-L/usr/local/cuda/lib64", "-lcudart"] if with_cuda else [])
             + sanitizer_compile_flags(sanitize))
        os.replace(tmp_output, output)


def build_prebuilt(output_dir, targets=tuple(PREBUILT_TARGETS)):
    """Compile every op family for each CPU target into output_dir, named by `prebuilt_name` (the wheel's
    libraries: setup.py). Returns their paths; raises RuntimeError naming the family and target that failed.

    Each g++ runs on one core, and a library takes 15-20 s, so the builds run side by side, one per core.
    """
    os.makedirs(output_dir, exist_ok=True)

    def build(job):
        family, target = job
        path = os.path.join(output_dir, prebuilt_name(family, target))
        try:
            compile_library(family, path, arch=target)
        except RuntimeError as error:
            raise RuntimeError(f"building the '{family}' ops for {target}: {error}") from error
        return path

    jobs = [(family, target) for family in families() for target in targets]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(build, jobs))


class OpLibrary:
    """One op family's shared library: `OpLibrary("lsh").module` is the loaded TF op module or None."""

    _registry = {}

    def __init__(self, family):
        self.family = family
        self.path = None  # the library that was loaded
        self._module = None
        self._error = None
        self._tried = False
        self._lock = threading.Lock()

    @classmethod
    def get(cls, family):
        if family not in cls._registry:
            cls._registry[family] = OpLibrary(family)
        return cls._registry[family]

    # ---------------------------------------------------------------------------------------------------

    def _fingerprint(self, files, with_cuda, sanitize):
        digest = hashlib.sha256()
        digest.update(tf.__version__.encode())
        digest.update(" ".join(tf_compile_flags() + tf_link_flags() + WARNING_FLAGS
                               + sanitizer_compile_flags(sanitize)).encode())
        digest.update(b"cuda" if with_cuda else b"cpu")
        digest.update(" ".join(cpu_target_flags()).encode())
        digest.update(_cpu_model().encode())  # built with -march=native: never reuse on another CPU
        root = source_root()
        headers = sorted(glob.glob(os.path.join(root, "common", "*"))) if root else []
        folder = os.path.dirname(files[0]) if files else None
        # Every header of the family counts, CUDA ones (.cuh) included: a kernel change must rebuild the library.
        headers += sorted(f for pattern in HEADER_PATTERNS for f in glob.glob(os.path.join(folder, pattern))) \
            if folder else []
        for path in list(files) + headers:
            digest.update(os.path.basename(path).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
        return digest.hexdigest()[:16]

    def library_path(self, with_cuda=None, sanitize=None):
        """Where the source build is cached, or None without sources. A sanitizer build has its own folder,
        named by its sanitizers (`sanitize`: see `sanitizers`; None reads TFMODELS_OPS_SANITIZE)."""
        folder, cc, cu = family_sources(self.family)
        if not cc:
            return None
        with_cuda = cuda_wanted() if with_cuda is None else with_cuda
        sanitize = sanitizers(sanitize)
        files = cc + (cu if with_cuda else [])
        tag = f"tf{tf.__version__}-{'cuda' if with_cuda else 'cpu'}-{self._fingerprint(files, with_cuda, sanitize)}"
        folder = os.path.join(cache_dir(), f"sanitize-{'-'.join(sanitize)}") if sanitize else cache_dir()
        return os.path.join(folder, f"_{self.family}_ops-{tag}.so")

    def build(self, with_cuda=None, force=False, sanitize=None):
        """Compile the library from the sources if it is not cached; returns its path. `sanitize`: the
        sanitizers to build with (see `sanitizers`; None reads TFMODELS_OPS_SANITIZE). Raises RuntimeError on
        failure."""
        with_cuda = cuda_wanted() if with_cuda is None else with_cuda
        sanitize = sanitizers(sanitize)
        target = self.library_path(with_cuda, sanitize)
        if target is None:
            raise RuntimeError(_missing_sources(self.family))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.isfile(target) and not force:
                return target
            compile_library(self.family, target, with_cuda=with_cuda, sanitize=sanitize)
            logger.info(f"built the '{self.family}' custom ops{' with ' + '+'.join(sanitize) if sanitize else ''}: "
                        f"{target}")
        return target

    def installed_library(self):
        """The wheel's compiled library for this CPU and TensorFlow: (path, None); where the wheel's libraries
        do not fit, (None, why not); in a source install, which has none, (None, None)."""
        installed = sorted(os.path.basename(path)
                           for path in glob.glob(os.path.join(COMPILED_DIR, f"_{self.family}_ops-*.so")))
        if not installed:
            return None, None
        if cuda_wanted():
            return None, "the installed compiled ops are CPU-only and the CUDA kernels are wanted"
        target = os.environ.get("TFMODELS_OPS_MARCH") or prebuilt_target(cpu_flags())
        if target is None:
            return None, "this CPU lacks the x86-64-v3 features (AVX2, FMA, BMI2, ...) the installed compiled ops need"
        name = prebuilt_name(self.family, target)
        if name not in installed:
            return None, (f"no installed compiled ops for {target} and TensorFlow {tf.__version__} (installed: "
                          f"{', '.join(installed)})")
        return os.path.join(COMPILED_DIR, name), None

    def load(self):
        """The loaded op module, or None (see `error`). Takes the wheel's compiled library where one fits, else
        builds from the sources on first use."""
        with self._lock:
            if self._tried:
                return self._module
            self._tried = True
            if os.environ.get("TFMODELS_DISABLE_CUSTOM_OPS", "") in ("1", "true", "yes"):
                self._error = "custom ops are disabled by TFMODELS_DISABLE_CUSTOM_OPS"
                return None
            not_installed = None
            try:
                sanitize = sanitizers()
                # The wheel's libraries are never sanitized: a sanitizer build always compiles from the sources.
                path, not_installed = (None, None) if sanitize else self.installed_library()
                if "address" in sanitize and "libasan" not in os.environ.get("LD_PRELOAD", ""):
                    raise RuntimeError("an AddressSanitizer build loads only with the ASan runtime preloaded: run "
                                       "Python with the environment of loader.sanitizer_environment() "
                                       f"({sanitizer_environment(sanitize)})")
                path = path or self.build()
                self._module = tf.load_op_library(path)
                self.path = path
            except Exception as error:  # noqa: BLE001 (any build/load failure becomes a recorded reason)
                reason = f"{type(error).__name__}: {error}"
                self._error = f"{not_installed}; then {reason}" if not_installed else reason
                self._module = None
            return self._module

    @property
    def error(self):
        return self._error


def _missing_sources(family):
    return (f"the C++ sources of the '{family}' ops are not installed (expected custom_ops/{family}/*.cc next to "
            "the tfmodels package)")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("model name", "flags"))), "")
    except OSError:
        return ""


def _run(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stderr or result.stdout
        # The first compiler error is the cause; the tail shows its context. Both reach the fallback warning.
        first = next((line.strip() for line in output.splitlines() if " error: " in line or "fatal error" in line),
                     f"exit status {result.returncode}")
        raise RuntimeError(f"compiling failed ({first}): {' '.join(command[:3])} ...\n{output[-3000:]}")


def build_all(with_cuda=None, force=False, sanitize=None):
    """Build every op family found in custom_ops/ (the `tfmodels build-ops` command), with the sanitizers named
    in `sanitize` (None reads TFMODELS_OPS_SANITIZE). A failed family does not stop the others: returns
    {family: the library's path, or the RuntimeError that stopped its build}."""
    root = source_root()
    if root is None:
        raise RuntimeError("custom_ops/ sources not found")
    built = {}
    for family in families():
        try:
            built[family] = OpLibrary.get(family).build(with_cuda=with_cuda, force=force, sanitize=sanitize)
        except RuntimeError as error:
            built[family] = error
    return built
