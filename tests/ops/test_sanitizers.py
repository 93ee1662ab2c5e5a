"""The custom ops built with AddressSanitizer + UndefinedBehaviorSanitizer (loader: TFMODELS_OPS_SANITIZE /
`sanitize=`), loaded in a fresh Python with the ASan runtime preloaded (loader.sanitizer_environment): a
deliberately broken fixture op must be reported, and the property-based fuzz (tests/ops/fuzz_ops.py) must run on
every op without a single report. CI starts cold: the sanitized libraries are built once per test session (about
a minute of CPU for the three families), in the session's temporary folder, which xdist workers share."""
import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

from tests.ops import fuzz_ops
from tfmodels.ops import loader

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Apart from fixture_ops/, whose every family test_loader's build-ops test builds and counts.
FIXTURES = os.path.join(os.path.dirname(__file__), "sanitizer_fixtures")
SANITIZE = "address,undefined"
FUZZ_EXAMPLES = 5  # per op, under the sanitizers (the in-process fuzz of test_fuzz_ops runs more)


def sanitizer_findings(stderr):
    """The report lines of ASan ("ERROR: AddressSanitizer: ...") and UBSan ("...: runtime error: ...")."""
    return [line for line in stderr.splitlines() if "ERROR: AddressSanitizer" in line or "runtime error:" in line]


@pytest.fixture(scope="session")
def sanitized_cache(tmp_path_factory):
    """A cache folder for the sanitized libraries, shared by the xdist workers of this test session only."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "sanitized-ops"
    path.mkdir(exist_ok=True)
    return str(path)


def build(monkeypatch, cache, families, source_root=None):
    """Build `families` with the sanitizers into `cache` (in this process, which has no ASan runtime: only the
    loading needs it); returns their paths."""
    monkeypatch.setenv("TFMODELS_OPS_CACHE", cache)
    if source_root:
        monkeypatch.setenv("TFMODELS_CUSTOM_OPS_DIR", source_root)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(families)) as pool:
        return list(pool.map(lambda family: loader.OpLibrary(family).build(with_cuda=False, sanitize=SANITIZE),
                             families))


def run_sanitized(args, cache, timeout=900):
    env = dict(os.environ, **loader.sanitizer_environment(loader.sanitizers(SANITIZE)), TFMODELS_OPS_SANITIZE=SANITIZE,
               TFMODELS_OPS_CACHE=cache, TFMODELS_BUILD_CUDA="0", PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TFMODELS_CUSTOM_OPS_DIR", None)
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_sanitizer_option_builds_apart():
    """The option's flags and cache folder: a sanitized library never shares a path with the normal one."""
    assert loader.sanitizers("undefined, address") == ("address", "undefined")
    assert loader.sanitizers("") == ()
    with pytest.raises(ValueError, match="unknown sanitizer"):
        loader.sanitizers("thread")
    flags = loader.sanitizer_compile_flags(("address", "undefined"))
    assert "-fsanitize=address,undefined" in flags and "-fno-sanitize-recover=all" in flags
    assert loader.sanitizer_compile_flags(()) == []
    library = loader.OpLibrary("lsh")
    plain, sanitized = library.library_path(with_cuda=False, sanitize=""), \
        library.library_path(with_cuda=False, sanitize=SANITIZE)
    assert os.path.dirname(sanitized) == os.path.join(os.path.dirname(plain), "sanitize-address-undefined")
    assert os.path.basename(plain) != os.path.basename(sanitized)


def test_loading_an_asan_build_without_the_runtime_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TFMODELS_OPS_SANITIZE", SANITIZE)
    monkeypatch.setenv("TFMODELS_OPS_CACHE", str(tmp_path))
    monkeypatch.setenv("LD_PRELOAD", "")
    library = loader.OpLibrary("lsh")
    assert library.load() is None
    assert "ASan runtime preloaded" in library.error and "LD_PRELOAD" in library.error
    assert not os.listdir(tmp_path)  # refused before building anything


@pytest.mark.parametrize("op, report", [("tf_models_test_overread", "heap-buffer-overflow"),
                                        ("tf_models_test_overflow", "signed integer overflow")])
def test_a_deliberate_bug_is_reported(monkeypatch, sanitized_cache, op, report):
    """The harness catches bugs: the fixture ops (an out-of-bounds read, a signed overflow) abort with the
    sanitizer's report, which sanitizer_findings (the check the fuzz run uses) sees."""
    path, = build(monkeypatch, sanitized_cache, ["sanitizer_bugs"], source_root=FIXTURES)
    script = ("import sys, tensorflow as tf; module = tf.load_op_library(sys.argv[1]); "
              "x = tf.constant([1, 2, 3, 4, 5, 6], tf.int32 if 'overflow' in sys.argv[2] else tf.float32); "
              "print(getattr(module, sys.argv[2])(x).numpy())")
    result = run_sanitized(["-c", script, path, op], sanitized_cache)
    findings = sanitizer_findings(result.stderr)
    assert result.returncode != 0, result.stdout
    assert findings and report in findings[0], result.stderr[-3000:]


def test_fuzz_under_sanitizers(monkeypatch, sanitized_cache):
    """Every op's property-based fuzz (good, NaN/Inf and bad inputs) in a process that loads the sanitized
    libraries: no sanitizer report, no crash, every property holds."""
    build(monkeypatch, sanitized_cache, loader.families())
    result = run_sanitized(["-m", "tests.ops.fuzz_ops", str(FUZZ_EXAMPLES)], sanitized_cache)
    assert not sanitizer_findings(result.stderr), result.stderr[-6000:]
    assert result.returncode == 0, result.stderr[-6000:]
    cases = json.loads(next(line for line in result.stdout.splitlines()
                            if line.startswith("FUZZ_CASES "))[len("FUZZ_CASES "):])
    assert set(cases) == set(fuzz_ops.PROPERTIES)
    for op, kinds in cases.items():
        assert sum(kinds.values()) == FUZZ_EXAMPLES, (op, kinds)
    print(f"cases per op under the sanitizers: {cases}")
