"""Counter declarations (virtlab/counters.py, Backend.counters) and what the
analysis builds from them (analysis/counters.py)."""
import re
from pathlib import Path

import pytest

from analysis import counters as C
from analysis import model as M
from analysis import profile as P
from virtlab import backend
from virtlab.counters import SHARED, Cost, CounterSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "counters.md"


def documented():
    """Counter names in docs/counters.md's tables, `<x>` placeholders as globs."""
    names = set()
    for cell in re.findall(r"^\| (`[^|]+`) \|", DOC.read_text(), re.M):
        for name in re.findall(r"`([^`]+)`", cell):
            if name != "name":
                names.add(re.sub(r"<[a-z]+>", "*", name))
    return names


def test_docs_list_every_declared_counter():
    cat = C.catalog()
    for spec in cat.specs:
        covered = [n for n in documented() if spec.matches(n) or n == spec.name
                   or (spec.is_glob and n.startswith(spec.name[:-1]))]
        assert covered, spec.name
    for name in documented():
        assert cat.spec(name.replace("*", "x")) or cat.spec(name), name


def test_every_installed_backend_is_known_and_declares_counters():
    cat = C.catalog()
    for name in backend.names():
        assert name in cat.known_backends
        assert backend.load(name).counters, name


def test_core_charged_counters_are_priced_by_every_profile():
    assert set(P.CHARGED) <= set(C.catalog().charged)
    assert {s.name for s in SHARED if s.charged and not s.is_glob and not s.costs()} == set(P.CHARGED)
    for name in P.names():
        p = P.load(name)
        for event in C.catalog().charged:
            assert p.cost(event, "native") is not None, (name, event)


def test_families_are_derived_from_globs():
    assert set(C.catalog().families) >= {"native.exception", "exit.priv",
                                         "reflect.exception"}
    assert P.family_of("exit.priv.cli") == "exit.priv"
    assert P.family_of("exit.total") is None


def test_not_charged_comes_from_declarations():
    assert M.NOT_CHARGED == C.catalog().not_charged
    assert "hw.cr2_*" in M.NOT_CHARGED           # declared by hw, not by the core


def test_spec_validation():
    with pytest.raises(ValueError, match="reason"):
        CounterSpec("x.y", "m", charged=False)
    with pytest.raises(ValueError, match="source or an assumption"):
        Cost(10)
    with pytest.raises(ValueError, match="non-negative"):
        Cost(-1, source="s")
    spec = CounterSpec("x.y", "m", cost=(Cost(5, source="a", profile="p4-2006"),
                                         Cost(7, assumption="b")))
    assert spec.cost_for("p4-2006").cycles == 5 and spec.cost_for("other").cycles == 7


def test_conflicting_and_unpriced_declarations(monkeypatch):
    class Loose:
        counters = (CounterSpec("loose.event", "m"),)

    class Clash:
        counters = (CounterSpec("exit.io", "something else"),)

    for cls, msg in ((Loose, "no default cost"), (Clash, "declared differently")):
        monkeypatch.setattr(backend, "load", lambda name, cls=cls: cls)
        C._build.cache_clear()
        with pytest.raises(C.DeclarationError, match=msg):
            C._build(("x",))
    C._build.cache_clear()


def test_a_counter_name_under_a_prefix_is_made_once():
    """counters.Named: the name of a counter under a prefix, made at its first
    use and the same string object from then on (found, not built, on every
    exit)."""
    from virtlab.counters import Named
    names = Named("exit.priv.")
    first = names["cl" + "i"]
    assert first == "exit.priv.cli" and names["cli"] is first
    assert dict(names) == {"cli": "exit.priv.cli"} and names.prefix == "exit.priv."
