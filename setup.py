"""Build hooks only (the metadata is in setup.cfg): the wheel carries the op sources and compiled CPU libraries.

- The sources: custom_ops/ installs as the package tfmodels._custom_ops (where the installed loader looks), one
  sub-package per folder found, so a new op family needs no change here. setup.cfg's package_data picks the files.
- The libraries: build_ext compiles every op family for the loader's PREBUILT_TARGETS (a portable x86-64-v3 and an
  AVX-512 x86-64-v4 build) against the TensorFlow importable at build time (build_backend.py adds it to an
  isolated wheel build), with the loader's own compile code, into tfmodels/_compiled_ops. The loader picks one at
  run time from the CPU flags.
- Editable installs (pip install -e .) skip that: they compile on first use for this CPU (-march=native).
"""
import importlib.util
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.dist import Distribution

ROOT = os.path.dirname(os.path.abspath(__file__))


def load_loader():
    """tfmodels/ops/loader.py on its own: it needs only TensorFlow, while importing the tfmodels package would
    import every model and their dependencies into the build."""
    spec = importlib.util.spec_from_file_location("tfmodels_ops_loader", os.path.join(ROOT, "tfmodels", "ops",
                                                                                         "loader.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_packages():
    folders = sorted(name for name in os.listdir(os.path.join(ROOT, "custom_ops"))
                     if os.path.isdir(os.path.join(ROOT, "custom_ops", name)))
    return ["tfmodels._custom_ops"] + [f"tfmodels._custom_ops.{name}" for name in folders]


class BinaryDistribution(Distribution):
    """A platform wheel (not py3-none-any): its libraries are machine code for one platform and one TensorFlow."""

    def has_ext_modules(self):
        return True


class BuildOps(build_ext):
    def run(self):
        if self.editable_mode:
            return
        loader = load_loader()
        output = os.path.join(self.build_lib, "tfmodels", os.path.basename(loader.COMPILED_DIR))
        shutil.rmtree(output, ignore_errors=True)  # no stale library of an earlier build (another TF) in the wheel
        for path in loader.build_prebuilt(output):
            print(f"built {os.path.relpath(path, self.build_lib)}")


setup(
    packages=find_packages(include=["tfmodels", "tfmodels.*"]) + source_packages(),
    package_dir={"tfmodels._custom_ops": "custom_ops"},
    distclass=BinaryDistribution,
    cmdclass={"build_ext": BuildOps},
)
