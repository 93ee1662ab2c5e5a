"""Code health, part of the test suite so that CI (which runs exactly the README's test command) checks it:
the linter (ruff, pyflakes rules), an unused-code check (vulture), the import layers and no import cycle."""
import os
import subprocess
import sys

from tests.import_graph import ROOT, cycles, import_graph

# What each part of the package may import (docs/architecture.md, "Layers"). Keys and values are the first
# name below tfmodels ("core" for tfmodels.core.*, "tfmodels" for the package __init__ itself).
ALLOWED = {
    "core": {"ops"},                 # core.export switches the custom ops to their twins (ops.dispatch);
                                     # core.attention runs the fused dense-attention op (ops.dense_attention);
                                     # core.checkpoint copies tensors with ops.checkpoint_copy;
                                     # core.layers normalises with ops.layer_norm
    "ops": {"core"},                 # core.logging, core.gradients (custom gradients), and core.attention's
                                     # tensor helpers (sliding_window_attention)
    "tokenizers": {"core"},          # Hub downloads (core.hub)
    "models": {"core", "ops", "tokenizers", "registry"},
    "registry": {"models"},          # family discovery
    "auto": {"core", "registry", "tokenizers"},
    "pipelines": {"auto", "registry"},
    "training": {"core", "registry", "tokenizers"},
    "cli": {"core", "ops", "registry", "training", "tfmodels"},
    "__main__": {"cli"},
    "tfmodels": {"auto", "core", "models", "pipelines", "tokenizers"},
}

# Names vulture cannot see used, each for a reason:
VULTURE_IGNORED_NAMES = [
    "TF*",                           # the TF-prefixed aliases of the public API (the reference documents' names)
    "get_config", "from_config",     # Keras serialisation hooks, called by Keras
    "get_build_config", "build_from_config",  # Keras .keras saving hooks, called by Keras
    "supports_jit",                  # read by Keras (a layer with a custom op turns XLA off)
    "input_spec",                    # read by Keras (a Dense whose input size prune_heads changed)
    "find_class", "persistent_load",  # pickle.Unpickler hooks
    "model_variables",               # a tf.Module attribute: tracking it is what puts the variables in a SavedModel
    "LongformerBaseModelOutput",     # public output class of the reference's API (HF's encoder output)
]
VULTURE_IGNORED_DECORATORS = ["@tf.RegisterGradient"]  # gradients are looked up by TensorFlow, by op name


def _existing(*paths):
    return [p for p in paths if os.path.exists(os.path.join(ROOT, p))]


# Code that uses the package: what vulture counts as users, and what ruff checks beside tfmodels/.
USERS = ("tests", "benchmarks", "scripts", "setup.py")


def _run(tool, *args):
    result = subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert "No module named" not in result.stderr, f"{tool} is missing: pip install -e '.[test]'"
    return result


def test_ruff_pyflakes_rules_are_clean():
    # A package __init__'s imports are its public API (re-exports), hence F401 is not checked there.
    result = _run("ruff", "check", "--isolated", "--no-cache", "--select", "F", "--per-file-ignores",
                  "__init__.py:F401", "--output-format", "concise", "tfmodels", *_existing(*USERS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_unused_code():
    """vulture at 60% confidence, its lowest: unused functions, classes, methods and attributes are 60% findings
    (the dead code this check exists for), unreachable code and unused arguments 100%. The tests, benchmarks,
    scripts and setup.py count as users of the package, but only findings in tfmodels/ are reported."""
    result = _run("vulture", "tfmodels", *_existing(*USERS), "--min-confidence", "60",
                  "--ignore-names", ",".join(VULTURE_IGNORED_NAMES),
                  "--ignore-decorators", ",".join(VULTURE_IGNORED_DECORATORS))
    findings = [line for line in result.stdout.splitlines() if line.startswith("tfmodels" + os.sep)]
    assert not findings, "\n".join(findings)


def _part(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tfmodels"


def test_no_import_cycle_between_modules():
    graph = import_graph()
    assert "tfmodels.training.job" in graph and "tfmodels.training.runner" in graph["tfmodels.cli"]
    found = cycles(graph)
    assert not found, "import cycles (module-level and function-level imports): " + "; ".join(
        " -> ".join(component) for component in found)


def test_imports_follow_the_layers():
    wrong = []
    for module, targets in sorted(import_graph().items()):
        for target, line in sorted(targets.items()):
            source_part, target_part = _part(module), _part(target)
            if source_part != target_part and target_part not in ALLOWED.get(source_part, set()):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_import_graph_reads_every_form_of_import(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg.sub import mod\n")
    (package / "sub" / "__init__.py").write_text("VALUE = 1\n")
    (package / "sub" / "mod.py").write_text("from . import other\nfrom pkg.sub import VALUE\n")
    (package / "sub" / "other.py").write_text("def late():\n    import pkg.sub.mod\n")
    graph = import_graph(str(tmp_path), "pkg")
    assert graph == {"pkg": {"pkg.sub.mod": 1}, "pkg.sub": {}, "pkg.sub.mod": {"pkg.sub.other": 1, "pkg.sub": 2},
                     "pkg.sub.other": {"pkg.sub.mod": 2}}
    assert cycles(graph) == [["pkg.sub.mod", "pkg.sub.other"]]


def test_python_tokenizers_do_not_load_tf_text():
    """tensorflow_text costs ~0.12 GiB resident: it is imported on first in-graph use only (one lazy import,
    tokenizers.in_graph._tf_text)."""
    code = ("import sys, tfmodels\n"
            "tok = tfmodels.XLNetTokenizer.from_pretrained('tfmodels/assets/xlnet')\n"
            "tok('Hello world')\n"
            "assert 'tensorflow_text' not in sys.modules\n"
            "tok.in_graph()\n"
            "assert 'tensorflow_text' in sys.modules\n")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
