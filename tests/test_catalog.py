"""The workload catalog: names, programs, selection, image paths."""
import pathlib

import pytest

from workloads import catalog
from workloads.catalog import CATALOG, FAMILIES, image_path, select

PROGS = pathlib.Path(catalog.__file__).resolve().parent / "user" / "progs"

EXPECTED = [
    "nano.syscall", "nano.in", "nano.crwr", "nano.callret", "nano.pgfault", "nano.divzero",
    "nano.ptemod", "nano.cli", "nano.popf", "nano.rdtsc", "nano.cpuid",
    "micro.null_call", "micro.null_io", "micro.ctxsw", "micro.fork", "micro.exec",
    "micro.pagefault", "micro.protfault", "micro.mmap",
    "macro.compute", "macro.forkwait", "macro.build", "macro.disk",
    "fidelity.popf", "fidelity.pushf", "fidelity.sidt", "fidelity.pushcs", "fidelity.smsw",
]


def test_catalog_has_exactly_the_workloads_in_a_stable_order():
    assert list(CATALOG) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_entry_is_well_formed(name):
    w = CATALOG[name]
    assert w.name == name
    family, op = name.split(".")
    assert w.family == family and family in FAMILIES
    assert w.program == f"{family}_{op}"
    assert w.measures and "\n" not in w.measures
    assert w.mirrors and "\n" not in w.mirrors
    assert isinstance(w.default_scale, int) and w.default_scale > 0
    assert w.image == "native"
    assert (PROGS / f"{w.program}.c").is_file()


def test_entries_are_frozen():
    with pytest.raises(Exception):
        CATALOG["nano.syscall"].default_scale = 1


def test_every_family_program_is_in_the_catalog_and_helpers_exist():
    progs = {p.stem for p in PROGS.glob("*.c")}
    family_progs = {p for p in progs if p.split("_")[0] in FAMILIES}
    assert family_progs == {w.program for w in CATALOG.values()}
    assert set(catalog.HELPER_PROGRAMS) <= progs


def test_select_names_globs_and_order():
    assert [w.name for w in select("nano.syscall")] == ["nano.syscall"]
    assert [w.name for w in select("micro.fork,nano.in")] == ["micro.fork", "nano.in"]
    nano = [w.name for w in select("nano.*")]
    assert nano == [n for n in EXPECTED if n.startswith("nano.")]
    assert [w.name for w in select("nano")] == nano
    assert [w.name for w in select("*")] == EXPECTED
    assert [w.name for w in select("")] == EXPECTED
    # duplicates collapse, first occurrence wins
    assert [w.name for w in select("nano.in, nano.*")][:2] == ["nano.in", "nano.syscall"]
    assert [w.name for w in select("*.p*f")] == ["nano.popf", "fidelity.popf", "fidelity.pushf"]


def test_select_unknown_raises_keyerror_naming_it():
    with pytest.raises(KeyError) as exc:
        select("nano.syscall,nano.nosuch")
    assert "nano.nosuch" in str(exc.value)
    with pytest.raises(KeyError):
        select("bogus.*")


def test_image_path():
    p = image_path()
    assert p.name == "native.img"
    assert p.parent == pathlib.Path(catalog.__file__).resolve().parent / "images"
    assert image_path("pv").name == "pv.img"
