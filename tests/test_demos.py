"""`virtlab demo`: every lesson runs, and every claim it prints is true of its runs.

The lessons' own conditions are not trusted here.  For each claim a lesson
can make, CHECKS below says again, from the runs' records in the lesson's
JSON (counters, console, trace events, translation units, the cost model
applied afresh), what must hold for its sentence to be true.  A printed
claim that this file cannot check, or whose check fails, fails the test; so
does an evidence value that is not what the run recorded.  The last tests
break a run on purpose and watch the lesson say what it saw instead.

No wall-clock time is asserted: the lessons' speed is measured by hand
(README, "Lessons").
"""
import io
import json
import os
import re

import pytest

from analysis import profile as profiles
from analysis.model import model
from virtlab import backend as backends
from virtlab import demos, harness
from virtlab.cli import main
from virtlab.demos import render, runs
from virtlab.demos.claims import All, Claim, Cmp, Evidence, Lit, eq, ge
from virtlab.result import RunResult


@pytest.fixture(scope="module", autouse=True)
def count_cache(tmp_path_factory):
    """Instruction counts in a directory of this module's own."""
    old = os.environ.get("VIRTLAB_CACHE")
    os.environ["VIRTLAB_CACHE"] = str(tmp_path_factory.mktemp("counts"))
    yield
    if old is None:
        del os.environ["VIRTLAB_CACHE"]
    else:
        os.environ["VIRTLAB_CACHE"] = old


def _watch_counting(monkeypatch):
    """The keys of the counting passes made from now on (harness._count)."""
    counted, real = [], harness._count

    def count(guest, backend, *args):
        counted.append(harness.count_key(guest, backend))
        return real(guest, backend, *args)
    monkeypatch.setattr(harness, "_count", count)
    return counted


# -- reading a lesson's JSON ------------------------------------------------------

def roi(doc, run, key):
    return doc["runs"][run]["roi_counters"].get(key, 0)


def whole(doc, run, key):
    return doc["runs"][run]["counters"].get(key, 0)


def its(doc, run):
    return doc["runs"][run]["iterations"]


def printed(doc, run, pattern):
    """A number the guest printed, found with this file's own pattern."""
    m = re.search(pattern, doc["runs"][run]["console"])
    assert m, f"{run} printed no match for {pattern!r}"
    return int(m.group(1), 0)


def per_iteration(doc, run):
    return doc["runs"][run]["modeled_cycles_per_iteration"]


def bill(doc, run, profile=None):
    """The cost model's bill of the run's region of interest, made here."""
    r = doc["runs"][run]
    prof = profiles.load(profile or r["profile"])
    return model(r["roi_counters"], r["roi_instructions"], prof, r["backend"])


def charged(doc, run, prefixes, profile=None):
    b = bill(doc, run, profile)
    return sum(c for e, c in b.events.items() if e.startswith(tuple(prefixes))) / its(doc, run)


def sites(doc, run, test):
    return [(u, s) for u in doc["runs"][run]["units"] for s in u["sites"] if test(s)]


def cost(event, backend, profile=profiles.DEFAULT):
    return profiles.load(profile).cost(event, backend).cycles


POPF_IF = r"kernel IF after popf\(IF=0\) = (\d+)"
USER_IDT = r"user IDT base (0x[0-9a-f]+)"
USER_GDT = r"user GDT base (0x[0-9a-f]+)"
LOADED_IDT = r"sidt: kernel IDT base \S+ \(.*?\), kernel loaded (0x[0-9a-f]+)"
WINDOW = 0xFC000000


def _popf_no_exit(d):
    at = {s["guest"] for _, s in sites(d, "bt", lambda s: s["text"].startswith("popf"))}
    seen = d["runs"]["trap (trace)"]
    return (roi(d, "trap", "sensitive.popf") > 0 and roi(d, "trap", "exit.priv.popf") == 0
            and at and seen["iterations"] == seen["scale"]
            and not any(e["eip"] in at for e in seen["trace"]))


def _reveals(d, run):
    idt, gdt = printed(d, run, USER_IDT), printed(d, run, USER_GDT)
    return idt >= WINDOW and gdt >= WINDOW and idt != printed(d, "native", USER_IDT)


def _hides(d, run):
    return (printed(d, run, USER_IDT) == printed(d, "native", USER_IDT)
            == printed(d, run, LOADED_IDT)
            and printed(d, run, USER_GDT) == printed(d, "native", USER_GDT))


def _ptwrite(s):
    return s["mark"] == "callout" and any("ptwrite" in c["note"] for c in s["code"])


def _bt_adapted_store(d):
    guilty = {s["guest"] for _, s in sites(d, "bt", _ptwrite)}
    found = sites(d, "bt", lambda s: s["guest"] in guilty)
    before = [u for u, s in found if s["mark"] == "IDENT"]
    after = [u for u, s in found if _ptwrite(s)]
    return (sum(u["executions"] for u in before) > 0 and all(u["dead"] for u in before)
            and sum(u["executions"] for u in after) > 0)


def _entries(d):
    pv = sum(roi(d, "pv", k) for k in ("hypercall.total", "pv.bounce", "evtchn.upcall",
                                       "pv.emulate"))
    trap = roi(d, "trap", "exit.total")
    bt = roi(d, "bt", "exit.total") + roi(d, "bt", "bt.callout")
    return pv < trap and pv < bt


def _syscall_traces(d):
    def at(run, exit_):
        return [e for e in d["runs"][run]["trace"] if e["instruction"] == "int 0x80"
                and e["exit"] == exit_]
    trap = d["runs"]["trap (trace)"]["trace"]
    return (trap and len(at("trap (trace)", True)) == len(trap)
            and at("hw (trace)", False) and at("pv (trace)", False))


FEW, MANY = "bt (5 forks)", "bt (300 forks)"


def _hottest(d, run):
    """The one unit the translation lesson kept of a run, its hottest (of the
    many the cache held, as the run records)."""
    units = d["runs"][run]["units"]
    assert len(units) == 1 and d["runs"][run]["units_in_cache"] > 1
    return units[0]


HISTORY = ["p4-2006", "core2-2006", "penryn-2008", "nehalem-2009", "westmere-2010",
           "sandybridge-2011"]


def _history_rows(d):
    return [(bill(d, "hw", p).total / its(d, "hw"), bill(d, "native", p).total / its(d, "native"))
            for p in HISTORY]


CHECKS = {
    "popf": {
        "native-clears-if": lambda d: printed(d, "native", POPF_IF) == 0,
        "trap-keeps-if": lambda d: printed(d, "trap", POPF_IF) == 1
        and d["runs"]["trap"]["matches_native"] is False,
        "trap-popf-no-exit": _popf_no_exit,
        "hw-clears-if": lambda d: printed(d, "hw", POPF_IF) == printed(d, "native", POPF_IF)
        and roi(d, "hw", "exit.total") == 0,
        "bt-rewrites-popf": lambda d: printed(d, "bt", POPF_IF) == printed(d, "native", POPF_IF)
        and roi(d, "bt", "bt.intc.popf") > 0
        and {s["mark"] for _, s in sites(d, "bt", lambda s: s["text"].startswith("popf"))}
        == {"in-TC"},
        "pv-clears-if": lambda d: printed(d, "pv", POPF_IF) == printed(d, "native", POPF_IF)
        and roi(d, "pv", "sensitive.popf") > 0,
    },
    "redpill": {
        "native-own-tables": lambda d: printed(d, "native", USER_IDT)
        == printed(d, "native", LOADED_IDT),
        "trap-reveals": lambda d: _reveals(d, "trap"),
        "trap-sidt-unseen": lambda d: whole(d, "trap", "sensitive.sidt") > 0
        and whole(d, "trap", "exit.priv.sidt") == 0,
        "hw-hides": lambda d: _hides(d, "hw"),
        "bt-hides": lambda d: _hides(d, "bt"),
        "bt-answers": lambda d: whole(d, "bt", "bt.callout.sidt") > 0
        and whole(d, "bt", "exit.priv.sidt") > 0,
        "pv-reveals": lambda d: _reveals(d, "pv")
        and "fidelity.sidt" in backends.load("pv").unfaithful,
    },
    "cli": {
        "trap-exits": lambda d: roi(d, "trap", "exit.priv.cli") >= its(d, "trap")
        and roi(d, "trap", "exit.priv.sti") >= its(d, "trap"),
        "trap-trace-gp": lambda d: any(
            e["instruction"] == "cli" and e["cause"] == "#GP" and e["exit"]
            and "exit.priv.cli" in e["effects"] for e in d["runs"]["trap (trace)"]["trace"]),
        "hw-no-exit": lambda d: roi(d, "hw", "exit.priv.cli") == 0
        and roi(d, "hw", "exit.total") < its(d, "hw"),
        "bt-in-tc": lambda d: roi(d, "bt", "bt.intc.cli") >= its(d, "bt")
        and roi(d, "bt", "bt.callout.cli") == 0 and roi(d, "bt", "exit.priv.cli") == 0,
        "bt-translation": lambda d: any(u["executions"] and s["mark"] == "in-TC" and s["code"]
                                        for u, s in sites(d, "bt", lambda s: s["text"] == "cli")),
        "pv-mask-store": lambda d: d["runs"]["pv"]["stores"].count(1) >= its(d, "pv")
        and d["runs"]["pv"]["stores"].count(0) >= its(d, "pv")
        and roi(d, "pv", "hypercall.total") == 0,
        "cost-per-iteration": lambda d: all(
            per_iteration(d, "trap") > per_iteration(d, b) for b in ("bt", "hw", "pv", "native")),
        "bt-vs-trap-events": lambda d: charged(d, "bt", ["bt.intc."])
        < charged(d, "trap", ["exit.priv"])
        and cost("bt.intc.cli", "bt") < cost("exit.priv", "trap")
        and charged(d, "bt", ["bt.translate.instructions"]) > 0
        and roi(d, "bt", "bt.translate.instructions") < its(d, "bt"),
    },
    "shadow-paging": {
        **{f"{b}-traced": (lambda b: lambda d: roi(d, b, "shadow.trace") >= its(d, b)
                           and roi(d, b, "exit.pf.hidden") >= roi(d, b, "shadow.trace")
                           and roi(d, b, "exit.pf.true") == 0)(b) for b in ("trap", "hw")},
        "trap-trace": lambda d: any(e["cause"] == "#PF" and "shadow.trace" in e["effects"]
                                    for e in d["runs"]["trap (trace)"]["trace"]),
        "npt-none": lambda d: roi(d, "hw-npt", "exit.pf.hidden") == 0
        and roi(d, "hw-npt", "shadow.trace") == 0
        and roi(d, "hw-npt", "exit.total") < roi(d, "hw", "exit.total"),
        "bt-adapts": lambda d: roi(d, "bt", "bt.retranslate") > 0
        and roi(d, "bt", "bt.callout.ptwrite") > 0
        and roi(d, "bt", "exit.pf.hidden") < roi(d, "trap", "exit.pf.hidden"),
        "bt-translations": _bt_adapted_store,
    },
    "translation": {
        "translated-once": lambda d: its(d, FEW) < its(d, MANY) and all(
            0 < roi(d, FEW, k) == roi(d, MANY, k)
            for k in ("bt.translate.units", "bt.translate.instructions")),
        "hot-unit": lambda d: _hottest(d, FEW)["guest"] == _hottest(d, MANY)["guest"]
        and its(d, FEW) < _hottest(d, FEW)["executions"] < _hottest(d, MANY)["executions"],
        "chained": lambda d: all(0 < roi(d, r, "bt.chain") == roi(d, r, "bt.callout.chain")
                                 == roi(d, FEW, "bt.chain") for r in (FEW, MANY)),
        "indirect": lambda d: roi(d, MANY, "bt.indirect.hit") > roi(d, FEW, "bt.indirect.hit")
        > roi(d, FEW, "bt.indirect.miss") == roi(d, MANY, "bt.indirect.miss"),
        "cost": lambda d: charged(d, FEW, ["bt.translate.instructions"])
        > charged(d, MANY, ["bt.translate.instructions"]) > 0
        and per_iteration(d, FEW) > per_iteration(d, MANY),
        "callouts-grow": lambda d: roi(d, MANY, "bt.callout") > roi(d, FEW, "bt.callout"),
    },
    "pv-batching": {
        "pv-batches": lambda d: roi(d, "pv", "hypercall.mmu_update.items")
        > roi(d, "pv", "hypercall.mmu_update") > 0,
        "pv-trace-batch": lambda d: max(e["effects"].get("hypercall.mmu_update.items", 0)
                                        for e in d["runs"]["pv (trace)"]["trace"]) > 1,
        "pv-multicall": lambda d: roi(d, "pv", "hypercall.multicall.items")
        > roi(d, "pv", "hypercall.multicall") > 0,
        "trap-stores": lambda d: roi(d, "trap", "shadow.trace") > 0,
        "entries": _entries,
        "bt-callouts": lambda d: roi(d, "bt", "bt.callout.chain") > 0
        and roi(d, "bt", "bt.callout.chain") == roi(d, "bt", "bt.chain"),
    },
    "syscall": {
        **{f"{b}-reflects": (lambda b: lambda d: roi(d, b, "reflect.syscall") >= its(d, b)
                             and roi(d, b, "exit.total") >= roi(d, b, "reflect.syscall"))(b)
           for b in ("trap", "bt")},
        "bt-iret": lambda d: roi(d, "bt", "bt.callout.iret") >= its(d, "bt"),
        "hw-direct": lambda d: roi(d, "hw", "native.syscall") >= its(d, "hw")
        and roi(d, "hw", "exit.total") == 0,
        "pv-direct": lambda d: roi(d, "pv", "pv.fast_syscall") >= its(d, "pv")
        and roi(d, "pv", "hypercall.total") == 0 and roi(d, "pv", "pv.bounce") == 0,
        "trace": _syscall_traces,
        "cost": lambda d: all(per_iteration(d, a) > per_iteration(d, b)
                              for a in ("trap", "bt") for b in ("hw", "pv")),
        "cost-why": lambda d: charged(d, "trap", ["reflect."]) > 0
        and charged(d, "bt", ["reflect."]) > 0
        and charged(d, "hw", ["exit.", "reflect.", "inject."]) < charged(d, "trap", ["reflect."]),
    },
    "exit-cost-history": {
        "one-run": lambda d: roi(d, "hw", "exit.priv.mov_cr0") >= its(d, "hw")
        and roi(d, "hw", "exit.total") >= roi(d, "hw", "exit.priv.mov_cr0"),
        "exit-cost-falls": lambda d: all(cost("exit.priv", "hw", a) > cost("exit.priv", "hw", b)
                                         for a, b in zip(HISTORY, HISTORY[1:])),
        "iteration-cost-falls": lambda d: _history_rows(d)[0][0] > _history_rows(d)[-1][0]
        and (_history_rows(d)[0][0] / _history_rows(d)[0][1]
             > _history_rows(d)[-1][0] / _history_rows(d)[-1][1]),
        "exits-dominate": lambda d: all(
            sum(c for e, c in bill(d, "hw", p).events.items() if e.startswith("exit."))
            > bill(d, "hw", p).total / 2 for p in HISTORY),
    },
}


def test_every_lesson_has_checks():
    assert sorted(CHECKS) == sorted(demos.names())
    assert len(demos.names()) >= 8


# -- the lessons, each run once --------------------------------------------------

def _flat(text):
    return " ".join(text.split())


def check_evidence(doc):
    """Every value a claim quotes from a run is what that run recorded."""
    for c in doc["claims"]:
        for name, e in c["evidence"].items():
            ref, value = e["ref"], e["value"]
            where = f"{doc['demo']} / {c['id']} / {name}"
            run = doc["runs"].get(ref.get("run"))
            if ref.get("in") in ("roi_counters", "counters"):
                keys = ref["keys"] if "keys" in ref else [ref["key"]]
                assert value == sum(run[ref["in"]].get(k, 0) for k in keys), where
            elif ref.get("in") == "console":
                m = re.search(ref["pattern"], run["console"])
                assert value == (int(m.group(1), 0) if m else None), where
            elif ref.get("in") in RunResult.__dataclass_fields__:
                assert value == run[ref["in"]], where
            elif ref.get("in") == "cost":
                assert value == cost(ref["event"], ref["backend"], ref["profile"]), where


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_lesson(name, monkeypatch):
    counted = _watch_counting(monkeypatch)
    lesson = demos.lesson(name)
    # The bundle ships every count a lesson needs: its first run on a new
    # machine counts nothing (this module's count cache starts empty).
    assert not counted, (f"{name} counted {counted[:3]}: the bundle lacks them; run "
                         "'python -m virtlab.count_cache --bundle'")
    doc = json.loads(render.as_json(lesson))
    text = _flat(render.text(lesson))
    assert doc["demo"] == name and doc["ok"], [r["reason"] for r in doc["runs"].values()]
    check_evidence(doc)
    for c in doc["claims"]:
        if c["held"]:
            # Printed, and true of the runs by this file's own reckoning.
            assert _flat(c["text"]) in text, c["id"]
            assert c["id"] in CHECKS[name], f"{name}: no independent check for {c['id']}"
            assert CHECKS[name][c["id"]](doc), f"{name}: printed {c['id']}, not true of the runs"
        else:
            assert f"[{c['id']}] not shown" in text
    # And the lesson still teaches what it is for: every claim holds today.
    missed = [c["text"] for c in doc["claims"] if not c["held"]]
    assert not missed, "\n".join(missed)
    assert doc["exhibits"], "a lesson shows its evidence"


# -- the command ----------------------------------------------------------------

def test_demo_lists_the_lessons():
    out = io.StringIO()
    assert main(["demo"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert [ln.split()[0] for ln in lines] == demos.names()
    assert all(len(ln.split()) > 2 for ln in lines)          # a summary on each line


def test_unknown_demo_is_one_line_and_status_2(capsys):
    out = io.StringIO()
    assert main(["demo", "no-such-lesson"], out=out) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no-such-lesson" in err
    assert out.getvalue() == ""


def test_demo_json_from_the_command_line():
    out = io.StringIO()
    assert main(["demo", "exit-cost-history", "--format", "json"], out=out) == 0
    doc = json.loads(out.getvalue())
    assert {c["id"] for c in doc["claims"]} == set(CHECKS["exit-cost-history"])
    check_evidence(doc)
    assert all(c["held"] and CHECKS["exit-cost-history"][c["id"]](doc) for c in doc["claims"])


# -- a run that does not show the point -------------------------------------------

def test_a_failed_claim_reports_what_was_seen(monkeypatch):
    """Make trap honour popf (as if its VMM had been fixed): the lesson must
    not say that trap kept IF set, and must say what trap printed instead."""
    real = runs.run

    def honest_trap(workload, backend, scale, label=None):
        r = real(workload, backend, scale, label)
        if backend == "trap":
            r.result.console = re.sub(r"(kernel IF after popf\(IF=0\) = )1", r"\g<1>0",
                                      r.result.console)
        return r
    monkeypatch.setattr(runs, "run", honest_trap)
    out = io.StringIO()
    assert main(["demo", "popf"], out=out) == 0
    text = _flat(out.getvalue())
    assert "Under trap the same popf left IF set" not in text
    assert "[trap-keeps-if] not shown: this run does not meet trap_if == 1" in text
    assert "trap_if = 0 (trap: the guest printed it)" in text
    # The claims that still hold are still made.
    assert "Natively the kernel's popf cleared IF" in text


def test_a_counter_that_breaks_a_claim(monkeypatch):
    """Take trap's cli exits away: the lesson reports the counts it got."""
    real = runs.run

    def no_cli_exits(workload, backend, scale, label=None):
        r = real(workload, backend, scale, label)
        if backend == "trap":
            r.result.roi_counters = {k: v for k, v in r.result.roi_counters.items()
                                     if k != "exit.priv.cli"}
        return r
    monkeypatch.setattr(runs, "run", no_cli_exits)
    lesson = demos.lesson("cli")
    doc = json.loads(render.as_json(lesson))
    claim = next(c for c in doc["claims"] if c["id"] == "trap-exits")
    assert not claim["held"]
    assert claim["evidence"]["cli"]["value"] == 0
    text = _flat(render.text(lesson))
    assert "Under trap cli and sti trapped into the VMM" not in text
    assert "cli = 0 (trap: exit.priv.cli in the region of interest)" in text


# -- claims themselves ------------------------------------------------------------

def test_a_claim_prints_its_sentence_only_when_its_condition_holds():
    ev = {"n": Evidence(3, "a count"), "m": Evidence(5, "another")}
    yes = Claim("x", "n is {n}, m is {m}", ev, ge("m", "n"))
    no = Claim("y", "n is {n}, m is {m}", ev, All(ge("n", "m"), eq("n", Lit(3))))
    assert yes.held() and yes.text() == "n is 3, m is 5"
    assert not no.held()
    assert no.text() == ("not shown: this run does not meet n >= m and n == 3. "
                         "Observed: n = 3 (a count); m = 5 (another)")


def test_a_missing_value_proves_nothing():
    ev = {"a": Evidence(None, "absent"), "b": Evidence(1, "one")}
    assert not Claim("z", "{a}", ev, Cmp("a", "!=", "b")).held()
    assert not Claim("s", "{a}", {"a": Evidence([3, 3, 1], "costs")},
                     Cmp("a", "is strictly decreasing")).held()


def test_a_condition_must_name_its_evidence():
    with pytest.raises(ValueError):
        Claim("bad", "{n}", {"n": Evidence(1, "one")}, ge("n", "missing"))
