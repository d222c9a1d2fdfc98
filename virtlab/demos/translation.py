"""translation: bt pays for its translations once, and runs them many times.

Under bt the guest kernel never runs as written: a block of it is decoded and
translated into the translation cache the first time control reaches it, and
every later time it runs from there.  Translating is expensive (thousands of
cycles an instruction), so binary translation pays only because a kernel runs
the same paths over and over.  micro.fork runs fork, exit and wait once per
iteration: the same kernel paths, a few or many times.
"""
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, gt

NAME = "translation"
SUMMARY = "bt's translation cache: kernel code translated once, then run and chained from it"
WORKLOAD = "micro.fork"
# Two runs, with sixty times the iterations between them.  Both scales are
# ones whose instruction counts ship with the images: pv-batching's, and the
# workload's default.
FEW, MANY = 5, 300

QUESTION = (
    "micro.fork: fork a child, let it exit, wait for it, once per iteration.  Under bt "
    "the kernel runs only as translations made into a cache the first time each block "
    f"runs.  What does bt translate in {FEW} forks, what in {MANY}, and what does a fork "
    "cost it at each scale?")


def lesson():
    few, many = (runs.translated(WORKLOAD, n, _hottest, label=f"bt ({n} forks)")
                 for n in (FEW, MANY))
    counted = [_counted(few, many, *spec) for spec in _COUNTED]
    claims = counted[:1] + [_hot_unit(few, many)] + counted[1:] + [_cost(few, many)]
    shown = [exhibits.table("bt: the translation cache's counters in the region of interest",
                            ["counter", few.label, many.label],
                            [[k, few.result.roi_counters.get(k, 0),
                              many.result.roi_counters.get(k, 0)] for k in _SHOWN])]
    shown += [exhibits.unit(many, u, "bt: its hottest unit, guest code beside its translation "
                            "(virtlab translate micro.fork --limit 1)") for u in many.units]
    return Lesson(NAME, "translation: translate once, run many times", QUESTION,
                  {few.label: few, many.label: many}, claims, shown)


_SHOWN = ("bt.translate.units", "bt.translate.instructions", "bt.chain", "bt.callout.chain",
          "bt.indirect.hit", "bt.indirect.miss", "bt.callout")


def _hottest(units):
    """The unit entered most often (the first such in the cache's order)."""
    return sorted(units, key=lambda u: -(u["executions"] or 0))[:1]


def _forks(few, many):
    return {"few": runs.field(few, "iterations"), "many": runs.field(many, "iterations")}


# Claims that compare counters of the two runs: (id, sentence, {evidence name:
# counter}, condition).  A name stands for the counter in the run of few forks,
# the name with _many for the same counter in the run of many.
_COUNTED = (
    # The kernel's paths are translated the first time they run: in the region
    # of interest the two runs translate the same code.
    ("translated-once",
     "In {few} forks bt translated {units} units of kernel code, {instructions} guest "
     "instructions (bt.translate.units, bt.translate.instructions); in {many} forks it "
     "translated {units_many} units, {instructions_many} instructions: the same.  Each path "
     "is translated the first time it runs, and runs from the cache after that.",
     {"units": "bt.translate.units", "instructions": "bt.translate.instructions"},
     All(gt("units", Lit(0)), eq("units", "units_many"),
         eq("instructions", "instructions_many"), gt("many", "few"))),
    # A direct branch from one unit to another leaves the cache once, through
    # its exit stub; the callout then patches the stub into a jump, and it
    # never leaves again.
    ("chained",
     "Direct branches between units were chained: {chain} exit stubs patched into jumps "
     "(bt.chain) at as many callouts, each the first use of its stub (bt.callout.chain = "
     "{callouts}); in {many} forks the same {chain_many}.  After that a branch from one "
     "translation to the next stays in the cache.",
     {"chain": "bt.chain", "callouts": "bt.callout.chain"},
     All(gt("chain", Lit(0)), eq("chain", "callouts"), eq("chain", "chain_many"),
         eq("callouts", "callouts_many"))),
    # A return or an indirect jump has no fixed target to chain to: translated
    # code looks it up in a table in the cache, and leaves the cache only when
    # the target is not there yet.
    ("indirect",
     "Returns and indirect jumps looked their target up in the cache's table: {hits} found "
     "it without leaving the cache in {few} forks, {hits_many} in {many} (bt.indirect.hit); "
     "the misses, each a callout that fills the table, stayed at {misses} and {misses_many} "
     "(bt.indirect.miss).",
     {"hits": "bt.indirect.hit", "misses": "bt.indirect.miss"},
     All(gt("hits_many", "hits"), gt("hits", "misses"), eq("misses", "misses_many"))),
    # What no translation removes: the callouts, where the VMM must act (a
    # page-table store made a callout, the kernel's iret, ...).
    ("callouts-grow",
     "What grows with the forks is what the cache cannot do by itself: callouts into the "
     "VMM, {callouts} in {few} forks and {callouts_many} in {many} (bt.callout, every kind).",
     {"callouts": "bt.callout"},
     gt("callouts_many", "callouts")),
)


def _counted(few, many, claim_id, says, counters, condition):
    ev = _forks(few, many)
    for name, counter in counters.items():
        ev[name], ev[f"{name}_many"] = runs.roi(few, counter), runs.roi(many, counter)
    return Claim(claim_id, says, ev, condition)


def _hot_unit(few, many):
    """The hottest unit of each run, by its execution counter."""
    def unit_value(run, what, fmt=""):
        u = run.units[0] if run.units else {}
        return runs.derived(u.get(what), f"{run.label}: the hottest unit's {what}",
                            {"run": run.label, "unit": "hottest"}, fmt)
    return Claim(
        "hot-unit",
        "The unit run most often, the guest code at {guest}, ran {ran} times in {few} forks "
        "and {ran_many} times in {many}, every time from the one translation.",
        {"guest": unit_value(few, "guest", "hex"), "guest_many": unit_value(many, "guest", "hex"),
         "ran": unit_value(few, "executions"), "ran_many": unit_value(many, "executions"),
         **_forks(few, many)},
        All(eq("guest", "guest_many"), gt("ran", "few"), gt("ran_many", "ran")))


# So the translator's cost is spread over the iterations.
def _cost(few, many):
    event = ["bt.translate.instructions"]
    return Claim(
        "cost",
        "Priced on {profile} at {each} cycles a translated instruction, translating cost "
        "{per_few} cycles per fork over {few} forks and {per_many} over {many}; a whole "
        "fork cost {fork_few} and {fork_many} cycles.",
        {"profile": runs.field(few, "profile"),
         "each": runs.cost("bt.translate.instructions", "bt"),
         "per_few": runs.charged(few, event), "per_many": runs.charged(many, event),
         "fork_few": runs.field(few, "modeled_cycles_per_iteration"),
         "fork_many": runs.field(many, "modeled_cycles_per_iteration"),
         **_forks(few, many)},
        All(gt("per_few", "per_many"), gt("per_many", Lit(0)), gt("fork_few", "fork_many")))
