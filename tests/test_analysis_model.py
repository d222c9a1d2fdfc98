"""The cost model's arithmetic, the bundled profiles, and profile validation."""

import pytest

from analysis import model as M
from analysis import profile as P

# A profile with round numbers; every charged counter gets a distinct cost.
BASE = {
    "native.syscall": 100, "native.exception": 200, "native.irq": 300,
    "native.io": 400, "native.hlt": 10,
    "exit.priv": 1000, "exit.io": 2000, "exit.pf.hidden": 3000, "exit.pf.true": 4000,
    "exit.hlt": 5000, "exit.irq": 6000, "exit.cpuid": 7000,
    "reflect.syscall": 50, "reflect.pf": 60, "reflect.exception": 70, "inject.irq": 80,
}

HEAD = '''[profile]
name = "round"
description = "round numbers"
clock_ghz = 2.0
cpi = { cycles = 2, assumption = "round" }
'''


def toml_for(events=BASE, extra=""):
    out = [HEAD]
    for name, cycles in events.items():
        out.append(f'[events."{name}"]\ncycles = {cycles}\nassumption = "test"\n')
    out.append(extra)
    return "\n".join(out)


@pytest.fixture
def write(tmp_path):
    def _write(text, name="myprof.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return _write


@pytest.fixture
def prof(write):
    extra = '''
[backends.trap."exit.priv"]
cycles = 500
source = "test"
[backends.trap."exit.priv.cli"]
cycles = 30
assumption = "test"
[events."native.exception.pf"]
cycles = 250
assumption = "test"
'''
    return P.load(write(toml_for(extra=extra)))


# -- arithmetic ---------------------------------------------------------------------

def test_totals_and_per_event_values(prof):
    counters = {"native.syscall": 3, "exit.io": 2, "exit.pf.hidden": 1,
                "exit.total": 3, "shadow.fill": 1, "sensitive.popf": 4,
                "hw.read_shadow": 9, "reflect.total": 0}
    b = M.model(counters, 1000, prof, "hw")
    assert b.base_cycles == 2000
    assert b.events == {"native.syscall": 300, "exit.io": 4000, "exit.pf.hidden": 3000}
    assert b.total == 2000 + 300 + 4000 + 3000
    assert b.overhead_by_event() == {"exit.io": 4000, "exit.pf.hidden": 3000}
    assert b.overhead_cycles == 7000
    assert b.uncharged == {"exit.total": 3, "shadow.fill": 1, "sensitive.popf": 4,
                           "hw.read_shadow": 9}
    assert b.unknown == {}
    for c in b.charges:
        assert c.cycles == c.count * c.cost.cycles
    assert sum(b.shares().values()) == pytest.approx(1.0)


def test_backend_override_rule(prof):
    counters = {"exit.priv": 4, "exit.priv.mov_cr3": 4}
    assert M.model(counters, 0, prof, "hw").events == {"exit.priv": 4000}
    trap = M.model(counters, 0, prof, "trap")
    assert trap.events == {"exit.priv": 2000}
    assert trap.charges[0].override is True
    assert prof.cost("exit.priv", "trap").cycles == 500
    assert prof.cost("exit.priv", "hw").cycles == 1000
    assert prof.cost("exit.priv", "hw-npt").cycles == 1000
    assert prof.cost("exit.priv.cli", "hw") is None
    assert prof.cost("bt.translate", "hw") is None


def test_no_double_count_of_family_and_subset(prof):
    counters = {"exit.total": 10, "exit.priv": 10, "exit.priv.cli": 6,
                "exit.priv.mov_cr3": 4}
    trap = M.model(counters, 0, prof, "trap")
    # 6 cli at their own 30, the other 4 at trap's exit.priv 500: 10 charged in all
    assert trap.events == {"exit.priv.cli": 180, "exit.priv": 2000}
    assert sum(c.count for c in trap.charges) == 10
    assert trap.uncharged == {"exit.total": 10, "exit.priv.mov_cr3": 4}
    # under hw the cli cost does not apply: all 10 at the generic cost
    assert M.model(counters, 0, prof, "hw").events == {"exit.priv": 10000}


def test_native_exception_by_vector(prof):
    counters = {"native.exception": 5, "native.exception.pf": 3, "native.exception.de": 2}
    b = M.model(counters, 10, prof, "native")
    assert b.events == {"native.exception.pf": 750, "native.exception": 400}
    assert b.total == 20 + 750 + 400


def test_inconsistent_family_counts(prof):
    with pytest.raises(ValueError, match="inconsistent"):
        M.model({"native.exception": 1, "native.exception.pf": 2}, 0, prof, "native")


def test_unknown_counter_and_backend(prof):
    b = M.model({"nobody.declares.this": 5}, 0, prof, "trap")
    assert b.unknown == {"nobody.declares.this": 5} and b.total == 0
    with pytest.raises(ValueError, match="back end"):
        M.model({}, 0, prof, "nope")


def test_per_iteration_and_microseconds(prof):
    b = M.model({"exit.hlt": 2}, 500, prof, "hw")      # 1000 + 10000
    assert b.total == 11000
    assert M.per_iteration(b, 100) == 110
    assert M.microseconds(11000, prof) == pytest.approx(5.5)      # 2 GHz
    native = M.model({}, 500, prof, "native")
    assert M.relative_overhead(b, native) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        M.per_iteration(b, 0)


def test_charged_and_not_charged_documented():
    for name in ("exit.total", "reflect.total", "shadow.*", "sensitive.*",
                 "hw.read_shadow", "exit.priv.*"):
        assert name in M.NOT_CHARGED
    assert set(M.CHARGED) == set(BASE)


# -- bundled profiles ------------------------------------------------------------------

def test_bundled_profiles_load_and_are_documented():
    assert P.DEFAULT in P.names()
    assert set(P.names()) >= {"p4-2006", "core2-2006", "penryn-2008", "nehalem-2009",
                              "westmere-2010", "sandybridge-2011"}
    for name in P.names():
        p = P.load(name)
        assert p.name == name and p.clock_ghz > 0
        costs = [p.cpi, *p.events.values()]
        costs += [c for t in p.backends.values() for c in t.values()]
        for c in costs:
            assert c.source or c.assumption
            assert c.cycles >= 0
        for event in M.CHARGED:
            assert p.cost(event, "hw") is not None
        # trap and hw share the exit names; every profile gives them different costs
        assert p.cost("exit.priv", "trap") != p.cost("exit.priv", "hw")


def test_p4_sourced_values():
    p = P.load("p4-2006")
    assert p.clock_ghz == 3.8
    assert p.cost("native.syscall", "native").cycles == 242
    assert p.cost("native.exception.pf", "native").cycles == 1093
    assert p.cost("native.io", "native").cycles == 3209
    assert p.cost("exit.priv", "trap").cycles == 2030
    assert p.cost("exit.priv", "hw").cycles == 3963 + 10 * 178 + 171 + (2030 - 889)


# -- validation: one test per kind of error ------------------------------------------

def err(write, text):
    with pytest.raises(P.ProfileError) as ei:
        P.load(write(text))
    msg = str(ei.value)
    assert "\n" not in msg and "myprof.toml: " in msg
    return msg


def test_unknown_name():
    with pytest.raises(P.ProfileError, match="unknown profile 'nosuch'"):
        P.load("nosuch")


def test_unreadable_file(tmp_path):
    with pytest.raises(P.ProfileError, match="missing.toml: cannot read"):
        P.load(tmp_path / "missing.toml")


def test_invalid_toml_names_the_line(write):
    msg = err(write, HEAD + "\n[events\n")
    assert "invalid TOML" in msg and "line 7" in msg


def test_missing_required_profile_key(write):
    msg = err(write, toml_for().replace('clock_ghz = 2.0\n', ''))
    assert "profile.clock_ghz: missing required key" in msg


def test_missing_charged_event(write):
    events = dict(BASE)
    del events["exit.io"]
    assert 'events."exit.io": missing required key' in err(write, toml_for(events))


def test_wrong_type(write):
    text = toml_for().replace('[events."exit.io"]\ncycles = 2000', '[events."exit.io"]\ncycles = "abc"')
    assert err(write, text).endswith(
        'myprof.toml: events."exit.io".cycles: must be a non-negative number, got \'abc\'')


def test_negative_cycles(write):
    text = toml_for().replace('[events."exit.io"]\ncycles = 2000', '[events."exit.io"]\ncycles = -1')
    assert 'events."exit.io".cycles: must be a non-negative number, got -1' in err(write, text)


def test_cycles_beyond_any_real_cost(write):
    # 1e308 priced a run at inf: no table or figure can show it.
    text = toml_for().replace('[events."exit.io"]\ncycles = 2000',
                              '[events."exit.io"]\ncycles = 1e308')
    assert 'events."exit.io".cycles: must be at most 1e+09, got 1e+308' in err(write, text)


def test_a_cpi_no_cpu_has(write):
    # 1e-320 is positive, and priced native runs at almost nothing: inf overheads.
    text = toml_for().replace("cpi = { cycles = 2,", "cpi = { cycles = 1e-320,")
    assert "profile.cpi.cycles: must be at least 0.01" in err(write, text)


def test_clock_not_positive(write):
    msg = err(write, toml_for().replace("clock_ghz = 2.0", "clock_ghz = 0"))
    assert "profile.clock_ghz: must be a positive number, got 0" in msg


def test_cost_without_source_or_assumption(write):
    text = toml_for() + '\n[backends.trap."exit.io"]\ncycles = 5\n'
    assert 'backends.trap."exit.io": needs a source or an assumption' in err(write, text)


def test_unknown_top_level_table(write):
    assert "extra: unknown key" in err(write, toml_for() + "\n[extra]\nx = 1\n")


def test_unknown_key_in_cost(write):
    text = toml_for().replace('[events."exit.io"]\ncycles = 2000', '[events."exit.io"]\ncycles = 2000\ncost = 3')
    assert 'events."exit.io".cost: unknown key' in err(write, text)


def test_unknown_event_name(write):
    text = toml_for() + '\n[events."exit.bogus"]\ncycles = 1\nsource = "x"\n'
    assert 'events."exit.bogus": not a chargeable counter name' in err(write, text)


def test_not_charged_name_rejected(write):
    text = toml_for() + '\n[events."exit.total"]\ncycles = 1\nsource = "x"\n'
    assert 'events."exit.total": not a chargeable counter name' in err(write, text)


def test_unknown_backend(write):
    text = toml_for() + '\n[backends.hw_npt."exit.io"]\ncycles = 1\nsource = "x"\n'
    assert "backends.hw_npt: unknown back end" in err(write, text)


def test_empty_source(write):
    text = toml_for().replace('[events."exit.io"]\ncycles = 2000\nassumption = "test"',
                              '[events."exit.io"]\ncycles = 2000\nsource = ""')
    assert 'events."exit.io".source: must be a non-empty string' in err(write, text)


def test_a_back_end_priced_like_another_takes_its_section():
    """bt's exits are a software VMM's, as trap's are (Backend.priced_like):
    the bundled profile's [backends.trap] figures price them, and a cost a
    back end declares for its own counter still stands."""
    from analysis.profile import load
    p4 = load("p4-2006")
    for event in ("exit.pf.hidden", "reflect.syscall", "exit.irq"):
        assert p4.cost(event, "bt") == p4.cost(event, "trap") != p4.cost(event, "hw")
    assert p4.cost("bt.callout", "bt").cycles == 1254
    b = M.model({"exit.total": 1, "exit.pf.hidden": 1, "bt.callout": 2, "bt.callout.io": 1,
                 "bt.callout.chain": 1}, 0, p4, "bt")
    assert b.total == 2930 + 1704 + 1254
