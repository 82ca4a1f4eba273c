"""The package: `pip install .` gives the `replichat-server` and `replichat` commands, and its
dependencies are requirements.txt's (declared once)."""
import os
import re
import shutil
import subprocess
import sys
import venv
from typing import Set

import pytest

import replichat
from replichat.client import cli
from replichat.server import cli as server_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_TIMEOUT_S = 240


def _normalized(requirement: str) -> str:
    """`google-re2==1.1; python_version < "3.9"` in one spelling, whatever the tool wrote."""
    name_version, _, marker = requirement.partition(";")
    name_version = re.sub(r"\s+", "", name_version)
    name, _, version = name_version.partition("==")
    marker = re.sub(r"\s+", " ", marker.replace("'", '"')).strip()
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}" + (f"; {marker}" if marker else "")


def requirements_txt() -> Set[str]:
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return {_normalized(line) for line in lines if line}


def test_both_commands_print_the_version(capsys) -> None:
    for main, command in ((server_cli.main, "replichat-server"), (cli.main, "replichat")):
        with pytest.raises(SystemExit) as exit_info:
            main(["--version"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"{command} {replichat.__version__} (Python ")


def test_pip_install_gives_both_commands_and_requirements_txt_dependencies(tmp_path) -> None:
    """Built and installed from a copy of the tree (so the checkout gets no build/ or
    egg-info) into a fresh virtual environment. Offline: no build isolation (the interpreter's
    own setuptools builds it, requirements-dev.txt pins one recent enough) and --no-deps (the
    environment sees the interpreter's installed dependencies instead)."""
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 64:
        pytest.skip(f"setuptools {setuptools.__version__} cannot build PEP 621 projects: "
                    f"pip install -r requirements-dev.txt installs a recent one")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "data", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "bench", "tests", "build", "*.egg-info"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "--no-index", str(source)],
        check=True, timeout=INSTALL_TIMEOUT_S, cwd=str(tmp_path),
    )
    # The commands run from the environment, outside the checkout: they must use the installed package.
    for command in ("replichat-server", "replichat"):
        done = subprocess.run([str(env_dir / "bin" / command), "--version"], capture_output=True, text=True,
                              timeout=60, cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{command} {replichat.__version__} "), done.stdout
    located = subprocess.run([python, "-c", "import replichat, replichat.proto.chat_pb2; print(replichat.__file__)"],
                             capture_output=True, text=True, timeout=60, cwd=str(tmp_path), check=True).stdout
    assert str(env_dir) in located, f"imported from {located}, not from the environment"
    # The cluster page's files are in the package, and the launcher starts replicas through the
    # package's module (there is no server.py beside an installed package).
    installed = subprocess.run(
        [python, "-c", "from replichat.metrics.site import _load_static; from replichat.server.launcher import server_command;"
         " print(sorted(_load_static())); print(server_command()[1:])"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path), check=True).stdout.splitlines()
    assert installed == ["['/', '/page.css', '/page.js']", "['-m', 'replichat.server.cli']"]
    metadata = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('replichat')))"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path), check=True).stdout
    assert {_normalized(line) for line in metadata.splitlines() if line} == requirements_txt()


def test_requirements_are_pinned() -> None:
    """requirements.txt is what pyproject.toml declares: every line one exact version."""
    assert requirements_txt()
    for requirement in requirements_txt():
        assert re.match(r"^[a-z0-9-]+==[0-9][^;]*(; .+)?$", requirement), requirement
