"""pv-batching: a ported kernel asks for its page-table changes in batches.

A pv kernel may not write its page tables; it queues the changes and asks
the hypervisor to validate and apply them in one mmu_update hypercall, and
puts several hypercalls into one multicall.  An unmodified kernel under trap
or bt writes its tables one store at a time, and the VMM hears of each one.
micro.fork forks a child, which exits, and waits, once per iteration: the
copy of an address space is many page-table stores.
"""
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, gt, lt

NAME = "pv-batching"
SUMMARY = "fork: pv's mmu_update batches, and VMM entries against trap and bt"
WORKLOAD, SCALE = "micro.fork", 5

QUESTION = (
    "micro.fork: fork a child, let it exit, wait for it, once per iteration.  Copying "
    "an address space writes many page-table entries.  How often does the VMM or the "
    "hypervisor get control for it under trap, bt and pv?")

# What counts as an entry into the VMM, per back end (docs/counters.md): under
# trap every exit (system calls and exceptions included, which trap first);
# under bt those, plus every callout of the translated kernel; under pv every
# hypercall (a multicall is one), every bounced exception, every upcall and
# every emulated port access.  A direct system call enters nothing.
ENTRIES = {"trap": ("exit.total",),
           "bt": ("exit.total", "bt.callout"),
           "pv": ("hypercall.total", "pv.bounce", "evtchn.upcall", "pv.emulate")}


def lesson():
    got = {b: runs.run(WORKLOAD, b, SCALE) for b in ("trap", "bt", "pv")}
    seen = runs.traced(WORKLOAD, "pv", SCALE, limit=12, label="pv (trace)")
    pv, trap, bt = got["pv"], got["trap"], got["bt"]
    entries = {b: runs.roi_sum(got[b], ENTRIES[b], "VMM entries") for b in got}
    biggest = max((e["effects"].get("hypercall.mmu_update.items", 0) for e in seen.trace),
                  default=0)
    claims = [
        Claim("pv-batches",
              "Under pv the kernel made {calls} mmu_update hypercalls carrying {items} "
              "page-table updates in {iterations} forks: {per} updates per hypercall.",
              {"calls": runs.roi(pv, "hypercall.mmu_update"),
               "items": runs.roi(pv, "hypercall.mmu_update.items"),
               "iterations": runs.field(pv, "iterations"),
               "per": _ratio(pv, "hypercall.mmu_update.items", "hypercall.mmu_update")},
              All(gt("calls", Lit(0)), gt("items", "calls"))),
        Claim("pv-trace-batch",
              "The trace shows a batch: one int 0x82 that applied {biggest} updates "
              "(hypercall.mmu_update.items) in the first {traced} events.",
              {"biggest": runs.derived(biggest, f"{seen.label}: the most updates in one event",
                                       {"run": seen.label, "count": "trace",
                                        "max": "hypercall.mmu_update.items"}),
               "traced": runs.derived(len(seen.trace), f"{seen.label}: events traced",
                                      {"run": seen.label, "count": "trace"})},
              gt("biggest", Lit(1))),
        Claim("pv-multicall",
              "It also joined hypercalls: {calls} multicalls carried {items} hypercalls "
              "(hypercall.multicall.items) for one entry each.",
              {"calls": runs.roi(pv, "hypercall.multicall"),
               "items": runs.roi(pv, "hypercall.multicall.items")},
              All(gt("calls", Lit(0)), gt("items", "calls"))),
        Claim("trap-stores",
              "Under trap the unmodified kernel wrote its page tables one store at a time, "
              "and the VMM heard of each through a fault: {traced} traced writes "
              "(shadow.trace), beside {fills} shadow fills.",
              {"traced": runs.roi(trap, "shadow.trace"), "fills": runs.roi(trap, "shadow.fill")},
              gt("traced", Lit(0))),
        Claim("entries",
              "VMM entries in the region, {iterations} forks: pv {pv}, trap {trap}, bt {bt} "
              "(per fork: pv {pv_per}, trap {trap_per}, bt {bt_per}).",
              {"pv": entries["pv"], "trap": entries["trap"], "bt": entries["bt"],
               "iterations": runs.field(pv, "iterations"),
               **{f"{b}_per": _per(entries[b], got[b]) for b in got}},
              All(lt("pv", "trap"), lt("pv", "bt"))),
        Claim("bt-callouts",
              "Of bt's entries, {callouts} were callouts of its translated kernel "
              "(bt.callout); {chain} of them ({share} of the callouts) chained a newly "
              "translated unit, each patching one exit stub for good (bt.chain = {chained}).",
              {"callouts": runs.roi(bt, "bt.callout"), "chain": runs.roi(bt, "bt.callout.chain"),
               "chained": runs.roi(bt, "bt.chain"),
               "share": _ratio(bt, "bt.callout.chain", "bt.callout")},
              All(gt("chain", Lit(0)), eq("chain", "chained"))),
    ]
    shown = [exhibits.trace(seen, "pv: the first events of the region of interest "
                            "(virtlab trace micro.fork --backend pv)")]
    return Lesson(NAME, "pv batching: page-table updates by the batch", QUESTION,
                  {**{r.label: r for r in got.values()}, seen.label: seen}, claims, shown)


def _ratio(run, top, bottom):
    a, b = run.result.roi_counters.get(top, 0), run.result.roi_counters.get(bottom, 0)
    return runs.derived(a / b if b else None, f"{run.label}: {top} / {bottom}",
                        {"run": run.label, "ratio": [top, bottom]})


def _per(entries, run):
    n = run.result.iterations
    return runs.derived(entries.value / n if n else None,
                        f"{run.label}: VMM entries per iteration",
                        {"run": run.label, "per_iteration": entries.ref.get("keys")})
