"""The direction of dependencies, checked on the source.

Workload, then machine and back end, then result, then analysis: each layer
imports only the ones before it.  The techniques (trap_emulate/, bt/, pv/)
build on the core and never on each other, so that one can be read, removed or
replaced alone; only the front end (the command line and the Python API)
sees every layer.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TECHNIQUES = ("trap_emulate", "bt", "pv")
FRONT_END = {"virtlab/cli.py", "virtlab/api.py", "virtlab/__init__.py", "virtlab/__main__.py"}
# The lessons of `virtlab demo` run guests, list bt's translations and price
# results: like the command line that prints them, they see every layer.
FRONT_END_PACKAGES = ("virtlab/demos/",)


def modules(package):
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported(path):
    """Top-level package names a module imports, relative imports resolved."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT).parts[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = (package + ("." + node.module if node.module else "")
                      if node.level else node.module)
            # `from virtlab import backend` imports the module virtlab.backend
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def tops(path):
    return {n.split(".")[0] for n in imported(path)}


def names_module(names, module):
    return any(n == module or n.startswith(module + ".") for n in names)


def rel(path):
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_techniques_import_only_the_core(technique):
    for path in modules(technique):
        others = tops(path) & (set(TECHNIQUES) - {technique})
        assert not others, f"{rel(path)} imports {others}: shared parts belong in virtlab/"
        assert "analysis" not in tops(path), f"{rel(path)} imports the analysis"


def test_the_core_never_names_a_technique_or_the_analysis():
    for path in modules("virtlab"):
        if rel(path) in FRONT_END or rel(path).startswith(FRONT_END_PACKAGES):
            continue
        bad = tops(path) & (set(TECHNIQUES) | {"analysis"})
        assert not bad, f"{rel(path)} imports {bad}"


def test_the_harness_does_not_import_the_bench_matrix():
    assert not names_module(imported(ROOT / "virtlab/harness.py"), "virtlab.matrix")


def test_the_machine_imports_no_back_end():
    names = imported(ROOT / "virtlab/machine.py")
    for module in ("virtlab.native", "virtlab.vmm", "virtlab.harness", "virtlab.matrix"):
        assert not names_module(names, module), module


def test_the_analysis_reads_results_and_never_runs_a_guest():
    # (outfile: how every file the user names is written, figures included.)
    allowed = {"virtlab.result", "virtlab.errors", "virtlab.backend", "virtlab.counters",
               "virtlab.outfile"}
    for path in modules("analysis"):
        core = {n for n in imported(path) if n.split(".")[0] == "virtlab"}
        bad = {n for n in core if not any(names_module([n], a) for a in allowed)}
        assert not bad, f"{rel(path)} imports {bad}"
