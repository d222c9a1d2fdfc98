"""exit-cost-history: one hw run, priced on each CPU from 2005 to 2011.

A run records what happened (counters and instructions); a CPU profile says
what each event costs on one machine (analysis/profile.py), and the cost
model multiplies the two (analysis/model.py).  So one run can be priced on
every profile without running it again: here the VT-x round trip of each
generation of Intel CPUs, from the Pentium 4 Adams & Agesen measured to
Sandy Bridge (Agesen et al. 2012).  nano.crwr writes CR0 once per iteration
in the guest kernel, which exits under hw every time.
"""
from analysis import profile as profiles
from analysis.evaluate import evaluate

from . import exhibits, runs
from .claims import All, Claim, Cmp, Lesson, Lit, ge, gt

NAME = "exit-cost-history"
SUMMARY = "one hw run priced on each CPU profile, 2005 to 2011: the cost of an exit"
WORKLOAD, SCALE = "nano.crwr", 200

# The bundled profiles in the order the CPUs appeared: the Pentium 4 672
# (Prescott, the first VT-x part, late 2005), the Core 2 (2006), Penryn
# (2008), Nehalem (2009), Westmere (2010), Sandy Bridge (2011).
HISTORY = ("p4-2006", "core2-2006", "penryn-2008", "nehalem-2009", "westmere-2010",
           "sandybridge-2011")

QUESTION = (
    "nano.crwr: the guest kernel writes CR0 once per iteration, and under hw each write "
    "is a VM exit.  The run is made once; each CPU profile then prices the same counters "
    "with its own costs.  How did the price of an exit change from the first VT-x "
    "processors to Sandy Bridge?")


def lesson():
    hw = runs.run(WORKLOAD, "hw", SCALE)
    native = runs.run(WORKLOAD, "native", SCALE)
    names = [p for p in HISTORY if p in profiles.names()]
    # A failed run has no instruction count and nothing to price: no rows,
    # so every claim that needs them finds no values and is not made.
    priceable = hw.result.ok and native.result.ok
    rows = [_row(hw, native, p) for p in names] if priceable else []
    col = {k: runs.derived([r[k] for r in rows], f"hw and native, priced on each of "
                           f"{', '.join(names)}", {"runs": ["hw", "native"],
                                                   "profiles": names, "column": k})
           for k in ("exit_cost", "hw_cycles")}
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    claims = [
        Claim("one-run",
              "One hw run of {iterations} iterations made {exits} exits in the region, "
              "{cr0} of them for CR0 writes (exit.priv.mov_cr0); every row of the table "
              "below prices those same counters, on {profiles} profiles.",
              {"iterations": runs.field(hw, "iterations"), "exits": runs.roi(hw, "exit.total"),
               "cr0": runs.roi(hw, "exit.priv.mov_cr0"),
               "profiles": runs.derived(len(names), "profiles priced", {"profiles": names})},
              All(ge("cr0", "iterations"), ge("exits", "cr0"), gt("profiles", Lit(1)))),
        Claim("exit-cost-falls",
              "An exit (exit.priv under hw) cost {first_cost} cycles on {first} and "
              "{last_cost} on {last}: cheaper on each newer CPU ({costs}), {times} times "
              "cheaper from the oldest to the newest.",
              {"first": runs.derived(names[0] if names else None, "the oldest profile"),
               "last": runs.derived(names[-1] if names else None, "the newest profile"),
               "first_cost": runs.cost("exit.priv", "hw", names[0] if names else None),
               "last_cost": runs.cost("exit.priv", "hw", names[-1] if names else None),
               "costs": col["exit_cost"],
               "times": runs.derived(first.get("exit_cost", 0) / last["exit_cost"]
                                     if last.get("exit_cost") else None,
                                     "the oldest profile's cost / the newest's")},
              All(Cmp("costs", "is strictly decreasing"), gt("first_cost", "last_cost"))),
        Claim("iteration-cost-falls",
              "The same run's iteration cost {first_hw} cycles under hw on the oldest "
              "profile, {first_over} times native, and {last_hw} on the newest, {last_over} "
              "times native.",
              {"first_hw": runs.derived(first.get("hw_cycles"), "hw cycles per iteration, oldest"),
               "last_hw": runs.derived(last.get("hw_cycles"), "hw cycles per iteration, newest"),
               "first_over": runs.derived(first.get("overhead"), "hw / native, oldest"),
               "last_over": runs.derived(last.get("overhead"), "hw / native, newest"),
               "cycles": col["hw_cycles"]},
              All(gt("first_hw", "last_hw"), gt("first_over", "last_over"))),
        Claim("exits-dominate",
              "On every profile the exits are most of hw's cost: their share of an "
              "iteration's cycles is {shares}.",
              {"shares": runs.derived([r["exit_share"] for r in rows],
                                      "exit cycles / hw cycles per iteration, each profile",
                                      {"profiles": names, "column": "exit_share"}),
               "least": runs.derived(min((r["exit_share"] for r in rows), default=None),
                                     "the smallest share"),
               "half": runs.derived(0.5, "one half")},
              gt("least", "half")),
    ]
    table = exhibits.table(
        f"{WORKLOAD}, one hw run and one native run, priced on each profile",
        ["profile", "clock GHz", "exit.priv cycles", "hw cycles/iter", "native cycles/iter",
         "hw/native", "hw us/iter"],
        [[r["profile"], r["clock"], r["exit_cost"], r["hw_cycles"], r["native_cycles"],
          r["overhead"], r["hw_us"]] for r in rows])
    return Lesson(NAME, "exit cost history: one run, priced on each CPU", QUESTION,
                  {"hw": hw, "native": native}, claims, [table])


def _row(hw, native, name):
    """The two runs priced on one profile, without running them again."""
    prof = profiles.load(name)
    a, b = evaluate(hw.result, prof), evaluate(native.result, prof)
    exit_cycles = sum(c for e, c in a.breakdown.events.items() if e.startswith("exit."))
    return {"profile": name, "clock": prof.clock_ghz,
            "exit_cost": prof.cost("exit.priv", "hw").cycles,
            "hw_cycles": a.per_iteration, "native_cycles": b.per_iteration,
            "overhead": a.per_iteration / b.per_iteration,
            "hw_us": a.us_per_iteration,
            "exit_share": exit_cycles / a.breakdown.total}
