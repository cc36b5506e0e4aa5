"""The architecture holds: import-linter's contracts (``[tool.importlinter]`` in pyproject.toml)
and no import cycle between any two modules, type-only imports included.

The checks read the source (grimp parses every import statement, also those under
``if TYPE_CHECKING:`` and inside functions); nothing is imported or run. The tests of the
tests copy the tree, plant one wrong import and check that it is caught.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("switch", "connectors")

LINT = """
import sys
from importlinter.cli import lint_imports
sys.exit(lint_imports(config_filename="pyproject.toml", limit_to_contracts=tuple(sys.argv[1:]),
                      no_cache=True, no_logo=True))
"""


def lint(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """import-linter on the tree at ``root`` (only ``contracts``, by id, when given), in a process
    of its own so that it reads that tree and not the one this test runs from."""
    return subprocess.run(
        [sys.executable, "-c", LINT, *contracts], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True, text=True, timeout=60,
    )


def cycles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every set of modules that import each other, directly or round a loop (Tarjan's strongly
    connected components of more than one module, or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # iterative, so a long import chain cannot hit the recursion limit
        work = [(start, iter(sorted(imports.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(imports.get(target, ())))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == module:
                            break
                    if len(component) > 1 or module in imports.get(module, ()):
                        found.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def import_map(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, for the tree at ``root`` (read in a subprocess)."""
    script = (
        "import grimp, json\n"
        f"g = grimp.build_graph(*{PACKAGES!r}, cache_dir=None)\n"
        "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                         capture_output=True, text=True, timeout=60, check=True)
    return {module: set(targets) for module, targets in json.loads(out.stdout).items()}


def copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def plant(root: Path, module: str, line: str) -> None:
    """Add an import line to a module of the copied tree, after its ``from __future__`` import."""
    path = root / (module.replace(".", "/") + ".py")
    text = path.read_text()
    anchor = "from __future__ import annotations\n"
    assert anchor in text, f"{module} has no future import to plant after"
    path.write_text(text.replace(anchor, anchor + line + "\n", 1))


def test_every_layering_contract_is_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_takes_part_in_an_import_cycle():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert cycles(imports) == []


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the domain imports nothing of ours
        ("switch.domain.model", "from switch.gateway import errors", "layers"),
        # ... and no wire format or framework
        ("switch.domain.currency", "import json", "pure-domain"),
        ("switch.domain.model", "from twisted.internet import defer", "pure-domain"),
        # the engine must not reach up into the socket API (what this restructuring removed)
        ("switch.engine.payments", "from switch.gateway.errors import ApiError", "layers"),
        # the journal sits beside the ISO layer, not above it
        ("switch.journal.store", "from switch.iso import mti", "journal-below-iso"),
        # the gateway does not talk to banks
        ("switch.gateway.ops", "from switch.bank import mux", "gateway-uses-engine-and-domain"),
        # bank links and the journal are independent siblings
        ("switch.bank.mux", "from switch.journal import ids", "layers"),
        # a tool talks to the switch through the clients, not the server side
        ("switch.tools.kpay", "from switch.gateway import validate", "tools-use-public-parts"),
        # a plugin does not drive the engine
        ("connectors.base", "from switch.engine import saf", "layers"),
        # a type-only import counts too
        ("switch.iso.translate", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from switch.engine import bank",
         "layers"),
    ],
)
def test_a_wrong_import_breaks_the_suite(tmp_path, module, line, contract):
    root = copy_tree(tmp_path)
    assert lint(root, contract).returncode == 0, "the copy should keep the contract before the planted import"
    plant(root, module, line)
    result = lint(root, contract)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout and module in result.stdout, result.stdout


def test_a_type_only_cycle_is_caught(tmp_path):
    root = copy_tree(tmp_path)
    # lifecycle -> payments under TYPE_CHECKING closes a loop payments -> lifecycle
    plant(root, "switch.engine.lifecycle", "from typing import TYPE_CHECKING\n"
          "if TYPE_CHECKING:\n    from switch.engine.payments import PaymentService")
    assert ["switch.engine.lifecycle", "switch.engine.payments"] in cycles(import_map(root))
    result = lint(root, "acyclic")
    assert result.returncode == 1 and "1 broken" in result.stdout, result.stdout


def test_the_cycle_finder_on_small_graphs():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert sorted(cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}})) == [["a", "b"], ["c", "d"]]


MAX_MODULE_LINES = 500


def test_every_module_is_under_500_lines():
    """A module that grows to this holds more than one concept: split it by concept. Tests and bench scripts
    are modules too."""
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in (*PACKAGES, "tests", "bench")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {path: lines for path, lines in sizes.items() if lines >= MAX_MODULE_LINES} == {}
