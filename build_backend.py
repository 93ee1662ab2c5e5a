"""The build backend: setuptools' own, with TensorFlow added to what a wheel build needs.

setup.py compiles the wheel's op libraries against TensorFlow, so an isolated wheel build (`python -m build`,
`pip wheel .`) must install it into its build environment. Only a wheel build: an editable install
(`pip install -e .`) compiles the ops on first use instead, and installing TensorFlow into its build environment
took it from 12 s to 4 min on the project's 2-core machine.
"""
from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F401,F403 (every other hook is setuptools' own)

TENSORFLOW = "tensorflow>=2.21,<2.22"  # setup.cfg's tensorflow pin


def get_requires_for_build_wheel(config_settings=None):
    return build_meta.get_requires_for_build_wheel(config_settings) + [TENSORFLOW]
