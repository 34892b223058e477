"""The version has one source: pyproject.toml, read back from the installed package's metadata."""

import importlib.metadata
import pathlib
import re

import avq_plugin


def test_version_comes_from_the_package_metadata():
    assert avq_plugin.__version__ == importlib.metadata.version("avq-plugin")


def test_installed_version_is_the_one_in_pyproject():
    # (tomllib is Python >= 3.11; the project supports 3.10.)
    text = (pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    (version,) = re.findall(r'^version = "([^"]+)"$', project, flags=re.M)
    assert avq_plugin.__version__ == version
