"""Build and load the custom-op libraries, against the TensorFlow that is actually imported.

Each op family lives in custom_ops/<family>/: `*.cc` (kernels + TF wrappers, always built), `*.cu.cc` (CUDA
kernels, built when nvcc is present and CUDA is wanted) and `harness*.cu` (the TF-free test harness, never part
of the library). The compiled `.so` is cached under ~/.cache/tfmodels/ops (or $TFMODELS_OPS_CACHE), keyed by
the TensorFlow version, the compile flags and a hash of the sources, so a TF upgrade or a source change
rebuilds it. A file lock keeps parallel processes (pytest-xdist) from building the same library twice.

Nothing here raises on a missing compiler: `load()` records why a library is unavailable, and the dispatch
(tfmodels.ops.dispatch) decides whether that is an error ("custom" mode) or a warning and the pure-TF twin
("auto" mode).
"""
import fcntl
import functools
import glob
import hashlib
import os
import shutil
import subprocess
import threading

import tensorflow as tf

from tfmodels.core.logging import logger

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SOURCE_ROOTS = [os.path.join(os.path.dirname(_PACKAGE_DIR), "custom_ops"),  # a checkout / editable install
                 os.path.join(_PACKAGE_DIR, "_custom_ops")]                  # an installed wheel
WARNING_FLAGS = ["-Wno-deprecated-declarations", "-Wno-interference-size", "-Wno-ignored-attributes"]
HEADER_PATTERNS = ("*.h", "*.hpp", "*.cuh", "*.inc")
NVCC_ARCHS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]


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


def cpu_arch():
    """The -march the CPU kernels are built for: native (this CPU) unless TFMODELS_OPS_MARCH names another (e.g.
    x86-64-v3 for a library that must also run on AVX2-only machines, or to test that build on this one)."""
    return os.environ.get("TFMODELS_OPS_MARCH", "native")


def cpu_target_flags(arch=None):
    """The g++ flags that pick the CPU target: `-march=<arch>`, minus AVX512-FP16.

    Why minus FP16: with __AVX512FP16__ defined (-march=native on Sapphire Rapids and later Intel CPUs, or
    -march=sapphirerapids), Eigen turns on its AVX512-FP16 packet math, and the Eigen snapshot TensorFlow 2.21
    bundles cannot compile that file: Eigen/src/Core/arch/AVX512/PacketMathFP16.h specialises
    `predux_half_dowto4`, a template its GenericPacketMath.h no longer declares ("expected initializer before
    '<'"). TensorFlow itself is built without FP16 vectorisation, so its wheel never meets that code. Our kernels
    do no FP16 arithmetic, so dropping the one feature loses nothing and keeps every other extension of the
    target (AVX-512, AMX, ...). A g++ too old to know the flag cannot define __AVX512FP16__ either, so the flag is
    added only where the compiler accepts it.
    """
    arch = arch or cpu_arch()
    return [f"-march={arch}"] + (["-mno-avx512fp16"] if _compiler_accepts("-mno-avx512fp16") else [])


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


class OpLibrary:
    """One op family's shared library: `OpLibrary("lsh").module` is the loaded TF op module or None."""

    _registry = {}

    def __init__(self, family):
        self.family = family
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

    def sources(self):
        root = source_root()
        if root is None:
            return None, [], []
        folder = os.path.join(root, self.family)
        cc = sorted(f for f in glob.glob(os.path.join(folder, "*.cc")) if not f.endswith(".cu.cc"))
        cu = sorted(glob.glob(os.path.join(folder, "*.cu.cc")))
        return folder, cc, cu

    def _fingerprint(self, files, with_cuda):
        digest = hashlib.sha256()
        digest.update(tf.__version__.encode())
        digest.update(" ".join(tf_compile_flags() + tf_link_flags() + WARNING_FLAGS).encode())
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

    def library_path(self, with_cuda=None):
        folder, cc, cu = self.sources()
        if not cc:
            return None
        with_cuda = cuda_wanted() if with_cuda is None else with_cuda
        files = cc + (cu if with_cuda else [])
        tag = f"tf{tf.__version__}-{'cuda' if with_cuda else 'cpu'}-{self._fingerprint(files, with_cuda)}"
        return os.path.join(cache_dir(), f"_{self.family}_ops-{tag}.so")

    def build(self, with_cuda=None, force=False):
        """Compile the library if it is not cached; returns its path. Raises RuntimeError on failure."""
        folder, cc, cu = self.sources()
        if folder is None or not cc:
            raise RuntimeError(f"the C++ sources of the '{self.family}' ops are not installed (expected "
                               f"custom_ops/{self.family}/*.cc next to the tfmodels package)")
        with_cuda = cuda_wanted() if with_cuda is None else with_cuda
        target = self.library_path(with_cuda)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.isfile(target) and not force:
                return target
            if shutil.which("g++") is None:
                raise RuntimeError("no C++ compiler (g++) on PATH to build the custom ops")
            include = [f"-I{os.path.dirname(folder)}"]
            objects, tmp_dir = [], target + ".build"
            os.makedirs(tmp_dir, exist_ok=True)
            defines = ["-DGOOGLE_CUDA=1"] if with_cuda else []
            if with_cuda:
                for source in cu:
                    obj = os.path.join(tmp_dir, os.path.basename(source) + ".o")
                    _run(nvcc_command(source, obj, [os.path.dirname(folder)]))
                    objects.append(obj)
            tmp_target = target + ".tmp"
            _run(["g++", "-std=c++17", "-shared", "-fPIC", "-O3"] + cpu_target_flags() + WARNING_FLAGS + defines
                 + include + cc + objects + ["-o", tmp_target] + tf_compile_flags() + tf_link_flags()
                 + (["-L/usr/local/cuda/lib64", "-lcudart"] if with_cuda else []))
            os.replace(tmp_target, target)
            shutil.rmtree(tmp_dir, ignore_errors=True)
            logger.info(f"built the '{self.family}' custom ops: {target}")
        return target

    def load(self):
        """The loaded op module, or None (see `error`). Builds on first use."""
        with self._lock:
            if self._tried:
                return self._module
            self._tried = True
            if os.environ.get("TFMODELS_DISABLE_CUSTOM_OPS", "") in ("1", "true", "yes"):
                self._error = "custom ops are disabled by TFMODELS_DISABLE_CUSTOM_OPS"
                return None
            try:
                path = self.build()
                self._module = tf.load_op_library(path)
            except Exception as error:  # noqa: BLE001 (any build/load failure becomes a recorded reason)
                self._error = f"{type(error).__name__}: {error}"
                self._module = None
            return self._module

    @property
    def error(self):
        return self._error


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


def build_all(with_cuda=None, force=False):
    """Build every op family found in custom_ops/ (the `tfmodels build-ops` command)."""
    root = source_root()
    if root is None:
        raise RuntimeError("custom_ops/ sources not found")
    built = {}
    for folder in sorted(os.listdir(root)):
        if folder == "common" or not glob.glob(os.path.join(root, folder, "*.cc")):
            continue
        built[folder] = OpLibrary.get(folder).build(with_cuda=with_cuda, force=force)
    return built
