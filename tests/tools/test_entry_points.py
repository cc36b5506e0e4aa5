"""Every tool runs both ways the README promises: ``bin/<tool>`` from a checkout with any
interpreter that has the dependencies (kswitch itself not installed), and as a console script
declared in pyproject.toml."""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# bin/soak drives the chaos scenario of the test suite (tests/chaos), which is not installed.
CHECKOUT_ONLY = {"soak"}
# Our own distributions in site-packages: what the interpreter must NOT see for the check to mean anything.
OURS = re.compile(r"^(switch|connectors|kswitch[-_].*|__editable__.*kswitch.*)$")


def bin_scripts() -> list[Path]:
    return sorted(p for p in BIN.iterdir() if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def deps_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose only import path is the dependencies: this interpreter's site-packages
    linked entry by entry, without kswitch (develop-mode finder and .pth files included, as ``-S``
    skips .pth processing anyway)."""
    deps = tmp_path_factory.mktemp("deps")
    for directory in {*site.getsitepackages(), site.getusersitepackages()}:
        if not os.path.isdir(directory):
            continue
        for entry in Path(directory).iterdir():
            if not OURS.match(entry.name) and entry.suffix != ".pth" and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONNOUSERSITE": "1", "PYTHONPATH": str(deps)}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_environment_really_lacks_kswitch(deps_only, tmp_path):
    """Without this the next test would pass on an installed copy and prove nothing."""
    assert run(["-c", "import twisted, structlog, iso8583, psycopg"], deps_only, tmp_path).returncode == 0
    missing = run(["-c", "import switch"], deps_only, tmp_path)
    assert "No module named 'switch'" in missing.stderr


@pytest.mark.parametrize("script", bin_scripts(), ids=lambda p: p.name)
def test_bin_script_runs_from_the_checkout_without_kswitch_installed(script, deps_only, tmp_path):
    result = run([str(script), "--help"], deps_only, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout.lower(), result.stdout[:500]


def test_bin_scripts_share_one_way_onto_the_path():
    """One idiom, not near-copies: the same line puts the checkout first in every script."""
    line = "sys.path.insert(0, str(Path(__file__).resolve().parent.parent))"
    for script in bin_scripts():
        assert script.read_text().count(line) == 1, script.name


def test_every_bin_tool_is_a_console_script_with_the_same_main():
    by_module = {target.split(":")[0]: name for name, target in SCRIPTS.items()}
    for script in bin_scripts():
        if script.name in CHECKOUT_ONLY:
            continue
        module = re.search(r"^from (\S+) import main", script.read_text(), re.M)
        assert module, f"bin/{script.name} does not call a package's main"
        assert module.group(1) in by_module, f"bin/{script.name} ({module.group(1)}) has no [project.scripts] entry"
    assert {"kswitch", "banksim", "isodump", "isotrace", "kpay", "kswitch-bench", "kswitch-bench-journal",
            "kswitch-bench-link"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_entry_point_resolves_to_a_callable(name):
    module, _, attribute = SCRIPTS[name].partition(":")
    target = import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    assert callable(target)
