"""cli: masking interrupts, the instruction every kernel runs most.

Adams & Agesen's case for binary translation: a deprivileged cli traps, and
a trap costs thousands of cycles, where a translator can turn cli into a
store to a virtual IF.  nano.cli runs a cli/sti pair per iteration in the
guest kernel.
"""
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, ge, gt, lt

NAME = "cli"
SUMMARY = "cli/sti: what each back end does at each one, and what it costs"
WORKLOAD, SCALE = "nano.cli", 1000

QUESTION = (
    "nano.cli: the guest kernel runs cli; sti once per iteration.  Natively each is a "
    "few cycles.  Under a VMM the kernel must not really mask interrupts, so something "
    "else has to stand for its IF.  What does each back end do at each cli, and what "
    "does it cost?")


def lesson():
    native = runs.run(WORKLOAD, "native", SCALE)
    trap = runs.run(WORKLOAD, "trap", SCALE)
    hw = runs.run(WORKLOAD, "hw", SCALE)
    bt = runs.translated(WORKLOAD, SCALE, runs.holding(_is_cli), label="bt")
    pv = runs.mask_stores(WORKLOAD, SCALE, label="pv")
    seen = runs.traced(WORKLOAD, "trap", SCALE, limit=8, label="trap (trace)")
    loop = exhibits.sites(bt, _is_cli)
    loop.sort(key=lambda us: -(us[0]["executions"] or 0))      # the hottest: the loop
    claims = [
        Claim("trap-exits",
              "Under trap cli and sti trapped into the VMM to be emulated, each at least "
              "once per iteration: {cli} cli and {sti} sti exits (exit.priv.cli, "
              "exit.priv.sti) for {iterations} iterations.",
              {"cli": runs.roi(trap, "exit.priv.cli"), "sti": runs.roi(trap, "exit.priv.sti"),
               "iterations": runs.field(trap, "iterations")},
              All(ge("cli", "iterations"), ge("sti", "iterations"))),
        _trace_shows_gp(seen),
        Claim("hw-no-exit",
              "Under hw neither instruction exited: cli exits {cli}; exits of any kind in "
              "the region, {exits} for {iterations} iterations.",
              {"cli": runs.roi(hw, "exit.priv.cli"), "exits": runs.roi(hw, "exit.total"),
               "iterations": runs.field(hw, "iterations")},
              All(eq("cli", Lit(0)), lt("exits", "iterations"))),
        Claim("bt-in-tc",
              "Under bt the cli ran {intc} times inside the translation cache (bt.intc.cli), "
              "with {callouts} callouts and {exits} exits for it.",
              {"intc": runs.roi(bt, "bt.intc.cli"), "callouts": runs.roi(bt, "bt.callout.cli"),
               "exits": runs.roi(bt, "exit.priv.cli"),
               "iterations": runs.field(bt, "iterations")},
              All(ge("intc", "iterations"), eq("callouts", Lit(0)), eq("exits", Lit(0)))),
        _bt_translation(bt, loop),
        Claim("pv-mask-store",
              "Under pv the ported kernel masked events with plain stores into the shared-info "
              "page: {masks} stores of 1 and {unmasks} of 0 into evtchn_upcall_mask in the "
              "region, and {hypercalls} hypercalls.",
              {"masks": _stores(pv, 1), "unmasks": _stores(pv, 0),
               "hypercalls": runs.roi(pv, "hypercall.total"),
               "iterations": runs.field(pv, "iterations")},
              All(ge("masks", "iterations"), ge("unmasks", "iterations"),
                  eq("hypercalls", Lit(0)))),
        Claim("cost-per-iteration",
              "Priced on {profile}: a cli/sti iteration costs {trap} cycles under trap, {bt} "
              "under bt, {hw} under hw, {pv} under pv and {native} natively.",
              {"profile": runs.field(trap, "profile"), "trap": _per_iteration(trap),
               "bt": _per_iteration(bt), "hw": _per_iteration(hw), "pv": _per_iteration(pv),
               "native": _per_iteration(native)},
              All(gt("trap", "bt"), gt("trap", "hw"), gt("trap", "pv"), gt("trap", "native"))),
        Claim("bt-vs-trap-events",
              "The instructions themselves: trap's exits cost {trap_exits} cycles per "
              "iteration (exit.priv, {exit_cost} cycles each), bt's in-TC sequences "
              "{bt_intc} (bt.intc.*, {cli_cost} cycles for a cli).  What bt pays instead is "
              "translation: {bt_translate} cycles per iteration at this scale, for "
              "{translated} guest instructions translated in the region's {iterations} "
              "iterations (bt.translate.instructions).",
              {"trap_exits": runs.charged(trap, ["exit.priv"]),
               "exit_cost": runs.cost("exit.priv", "trap"),
               "bt_intc": runs.charged(bt, ["bt.intc."]),
               "cli_cost": runs.cost("bt.intc.cli", "bt"),
               "bt_translate": runs.charged(bt, ["bt.translate.instructions"]),
               "translated": runs.roi(bt, "bt.translate.instructions"),
               "iterations": runs.field(bt, "iterations")},
              All(lt("bt_intc", "trap_exits"), lt("cli_cost", "exit_cost"),
                  gt("bt_translate", Lit(0)), lt("translated", "iterations"))),
    ]
    shown = [exhibits.trace(seen, "trap: the first events of the region of interest "
                            "(virtlab trace nano.cli --backend trap)")]
    shown += [exhibits.unit(bt, u, "bt: the translation of the loop "
                            "(virtlab translate nano.cli --limit 1)") for u, _ in loop[:1]]
    return Lesson(NAME, "cli: a trap, a store, or nothing", QUESTION,
                  {r.label: r for r in (native, trap, hw, bt, pv, seen)}, claims, shown)


def _is_cli(site):
    return site["text"] == "cli"


def _per_iteration(run):
    return runs.field(run, "modeled_cycles_per_iteration")


def _stores(run, value):
    n = None if run.stores is None else sum(1 for v in run.stores if v == value)
    return runs.derived(n, f"{run.label}: stores of {value} into the event mask in the region",
                        {"run": run.label, "count": "stores", "value": value})


def _trace_shows_gp(seen):
    gp = [e for e in seen.trace if e["instruction"] == "cli" and e["cause"] == "#GP"
          and "exit.priv.cli" in e["effects"] and e["exit"]]
    return Claim(
        "trap-trace-gp",
        "The trace shows them: a general-protection fault (#GP) at the cli at {addr}, "
        "emulated (exit.priv.cli) and counted as an exit, {n} times in the first {traced} "
        "events of the region.",
        {"n": runs.derived(len(gp), f"{seen.label}: #GP exits at a cli",
                           {"run": seen.label, "count": "trace", "instruction": "cli",
                            "cause": "#GP"}),
         "traced": runs.derived(len(seen.trace), f"{seen.label}: events traced",
                                {"run": seen.label, "count": "trace"}),
         "addr": runs.derived(gp[0]["eip"] if gp else None, f"{seen.label}: where",
                              {"run": seen.label, "count": "trace"}, fmt="hex")},
        gt("n", Lit(0)))


def _bt_translation(bt, loop):
    """The cli of the hottest unit that holds one: the loop's.  (A run that
    translated no cli gives no values, and the claim is not made.)"""
    u, s = loop[0] if loop else ({}, {})
    where = {"run": bt.label, "site": "cli"}
    return Claim(
        "bt-translation",
        "bt translated the loop's cli at {addr} as an {mark} sequence of {length} "
        "instructions of its own, and the unit holding it ran {ran} times.",
        {"addr": runs.derived(s.get("guest"), f"{bt.label}: the cli in the hottest unit",
                              where, fmt="hex"),
         "mark": runs.derived(s.get("mark"), f"{bt.label}: the site's kind", where),
         "length": runs.derived(len(s["code"]) if s else None,
                                f"{bt.label}: TC instructions for the cli", where),
         "ran": runs.derived(u.get("executions"), f"{bt.label}: the unit's execution counter",
                             where)},
        All(eq("mark", Lit("in-TC")), gt("ran", Lit(0)), gt("length", Lit(0))))
