"""shadow-paging: the VMM's page tables, and what keeping them costs.

Under shadow paging the CPU walks tables the VMM builds from the guest's:
the VMM fills them on demand (a hidden page fault) and write-protects the
guest's own tables so that it hears of every change (a traced write, one
more hidden fault).  Nested paging lets the CPU walk the guest's tables
itself.  bt, which can change the store instruction, adapts instead.
nano.ptemod stores into a live page-table entry and flushes it with invlpg,
once per iteration.
"""
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, ge, gt, lt

NAME = "shadow-paging"
SUMMARY = "page-table writes: hidden faults and tracing (trap, hw), hw-npt, adaptive bt"
WORKLOAD, SCALE = "nano.ptemod", 50

QUESTION = (
    "nano.ptemod: the guest kernel writes an entry of a live page table and flushes it "
    "with invlpg, once per iteration.  Where the VMM keeps shadow page tables it must "
    "hear of the write before the CPU can use the entry.  What does each back end pay "
    "for it?")


def lesson():
    trap = runs.run(WORKLOAD, "trap", SCALE)
    hw = runs.run(WORKLOAD, "hw", SCALE)
    npt = runs.run(WORKLOAD, "hw-npt", SCALE)
    bt = runs.translated(WORKLOAD, SCALE, _the_store, label="bt")
    seen = runs.traced(WORKLOAD, "trap", SCALE, limit=16, label="trap (trace)")
    claims = [_traced(trap, "trap-traced", "trap"), _traced(hw, "hw-traced", "hw"),
              _trace_shows(seen),
              Claim("npt-none",
                    "Under hw-npt, with the guest's own tables walked by the CPU, the region "
                    "had {hidden} hidden faults, {traced} traced writes and {exits} exits of "
                    "any kind, where hw had {hw_exits}.",
                    {"hidden": runs.roi(npt, "exit.pf.hidden"),
                     "traced": runs.roi(npt, "shadow.trace"),
                     "exits": runs.roi(npt, "exit.total"),
                     "hw_exits": runs.roi(hw, "exit.total")},
                    All(eq("hidden", Lit(0)), eq("traced", Lit(0)), lt("exits", "hw_exits"))),
              Claim("bt-adapts",
                    "bt adapted: retranslations {re} (bt.retranslate), then {callouts} "
                    "page-table stores done by callout without a fault (bt.callout.ptwrite); "
                    "bt took {hidden} hidden faults where trap took {trap_hidden}.",
                    {"re": runs.roi(bt, "bt.retranslate"),
                     "callouts": runs.roi(bt, "bt.callout.ptwrite"),
                     "hidden": runs.roi(bt, "exit.pf.hidden"),
                     "trap_hidden": runs.roi(trap, "exit.pf.hidden")},
                    All(gt("re", Lit(0)), gt("callouts", Lit(0)),
                        lt("hidden", "trap_hidden"))),
              _bt_units(bt)]
    shown = [exhibits.trace(seen, "trap: the first events of the region of interest "
                            "(virtlab trace nano.ptemod --backend trap)")]
    for u, s in _store_sites(bt):
        kind = "after" if s["mark"] == "callout" else "before"
        shown.append(exhibits.unit(bt, u, f"bt: a translation of the store at "
                                   f"{s['guest']:#010x}, {kind} adaptation"))
    return Lesson(NAME, "shadow paging: hidden faults, traced writes, and what avoids them",
                  QUESTION, {r.label: r for r in (trap, hw, npt, bt, seen)}, claims, shown)


def _traced(run, id_, name):
    return Claim(
        id_,
        f"Under {name} the stores into the live page table faulted into the VMM, which "
        "emulated each and updated its shadow: {traced} traced writes (shadow.trace) among "
        "{hidden} hidden page faults (exit.pf.hidden) for {iterations} iterations; the "
        "guest saw none of them (true faults: {true}).",
        {"traced": runs.roi(run, "shadow.trace"), "hidden": runs.roi(run, "exit.pf.hidden"),
         "true": runs.roi(run, "exit.pf.true"), "iterations": runs.field(run, "iterations")},
        All(ge("traced", "iterations"), ge("hidden", "traced"), eq("true", Lit(0))))


def _trace_shows(seen):
    traced = [e for e in seen.trace if "shadow.trace" in e["effects"] and e["cause"] == "#PF"]
    return Claim(
        "trap-trace",
        "The trace shows one: a page fault (#PF) at the store '{insn}' at {addr}, "
        "handled as a traced write (exit.pf.hidden, shadow.trace).",
        {"n": runs.derived(len(traced), f"{seen.label}: #PF events with shadow.trace",
                           {"run": seen.label, "count": "trace", "effect": "shadow.trace"}),
         "insn": runs.derived(traced[0]["instruction"] if traced else None,
                              f"{seen.label}: the instruction", {"run": seen.label}),
         "addr": runs.derived(traced[0]["eip"] if traced else None, f"{seen.label}: where",
                              {"run": seen.label}, fmt="hex")},
        gt("n", Lit(0)))


def _store_sites(bt):
    """The translations of the store that adaptive translation made a
    callout: the old ones (copied, now dead) and the new, in TC order."""
    guilty = {s["guest"] for _, s in exhibits.sites(bt, _is_ptwrite)}
    return exhibits.sites(bt, lambda s: s["guest"] in guilty)


def _the_store(units):
    """The units holding a store that adaptive translation made a callout,
    in either translation: before (copied) and after (the callout)."""
    guilty = {s["guest"] for u in units for s in u["sites"] if _is_ptwrite(s)}
    return runs.holding(lambda s: s["guest"] in guilty)(units)


def _is_ptwrite(site):
    return site["mark"] == "callout" and any(c["note"] == "callout: ptwrite"
                                             for c in site["code"])


def _bt_units(bt):
    found = _store_sites(bt)
    before = sum(u["executions"] or 0 for u, s in found if s["mark"] == "IDENT")
    after = sum(u["executions"] or 0 for u, s in found if _is_ptwrite(s))
    return Claim(
        "bt-translations",
        "The translations show it: the store at {addr} was first copied unchanged (IDENT) "
        "into units that ran {before} times and are now dead, then translated as a callout "
        "into a unit that ran {after} times.",
        {"addr": runs.derived(found[0][1]["guest"] if found else None,
                              f"{bt.label}: the store made a callout",
                              {"run": bt.label, "site": "ptwrite"}, fmt="hex"),
         "before": runs.derived(before, f"{bt.label}: executions of its IDENT units",
                                {"run": bt.label, "site": "ptwrite", "mark": "IDENT"}),
         "after": runs.derived(after, f"{bt.label}: executions of its callout unit",
                               {"run": bt.label, "site": "ptwrite", "mark": "callout"}),
         "dead": runs.derived(all(u["dead"] for u, s in found if s["mark"] == "IDENT"),
                              f"{bt.label}: the IDENT units are dead", {"run": bt.label})},
        All(gt("before", Lit(0)), gt("after", Lit(0)), eq("dead", Lit(True))))
