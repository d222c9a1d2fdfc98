"""popf: the Popek-Goldberg hole.

On IA-32, popf at a privilege level above IOPL does not fault when it tries
to change IF: it leaves IF alone, silently.  A VMM that runs the guest kernel
deprivileged (trap-and-emulate with ring compression) therefore cannot see
the kernel's popf, let alone emulate it.  fidelity.popf asks the kernel to
pop an EFLAGS image with IF clear and to read IF back.
"""
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, gt

NAME = "popf"
SUMMARY = "the Popek-Goldberg hole: what popf does to IF under trap, hw, bt and pv"
WORKLOAD, SCALE = "fidelity.popf", 3
KERNEL_IF = r"kernel IF after popf\(IF=0\) = (-?\d+)"


def lesson():
    native = runs.run(WORKLOAD, "native", SCALE)
    trap = runs.run(WORKLOAD, "trap", SCALE)
    hw = runs.run(WORKLOAD, "hw", SCALE)
    pv = runs.run(WORKLOAD, "pv", SCALE)
    # bt's one run is the profiled one, so that the translation shown is
    # the one whose counters the claims quote.
    bt = runs.translated(WORKLOAD, SCALE, runs.holding(_is_popf), label="bt")
    # The whole region traced: a limit far above its few events per iteration.
    seen = runs.traced(WORKLOAD, "trap", SCALE, limit=500, label="trap (trace)")
    popfs = exhibits.sites(bt, _is_popf)
    claims = [
        Claim("native-clears-if",
              "Natively the kernel's popf cleared IF: the kernel read back IF = {native_if}.",
              {"native_if": runs.console(native, KERNEL_IF)},
              eq("native_if", Lit(0))),
        Claim("trap-keeps-if",
              "Under trap the same popf left IF set: the kernel read back IF = {trap_if}, "
              "and the guest's output differs from native's (matches_native = {same}).",
              {"trap_if": runs.console(trap, KERNEL_IF),
               "native_if": runs.console(native, KERNEL_IF),
               "same": runs.field(trap, "matches_native")},
              All(eq("trap_if", Lit(1)), eq("same", Lit(False)))),
        _trap_saw_nothing(trap, seen, popfs),
        Claim("hw-clears-if",
              "Under hw the kernel read back IF = {hw_if}, as natively, with {exits} exits "
              "in the region of interest.",
              {"hw_if": runs.console(hw, KERNEL_IF), "native_if": runs.console(native, KERNEL_IF),
               "exits": runs.roi(hw, "exit.total")},
              All(eq("hw_if", "native_if"), eq("exits", Lit(0)))),
        _bt_rewrites(bt, native, popfs),
        Claim("pv-clears-if",
              "Under pv the ported kernel read back IF = {pv_if}, as natively, although popf "
              "still ran {popfs} times unprivileged in the region (sensitive.popf).",
              {"pv_if": runs.console(pv, KERNEL_IF), "native_if": runs.console(native, KERNEL_IF),
               "popfs": runs.roi(pv, "sensitive.popf")},
              All(eq("pv_if", "native_if"), gt("popfs", Lit(0)))),
    ]
    shown = [exhibits.console((native, trap, hw, bt, pv), "what each guest printed",
                              ("popf: kernel",))]
    shown += [exhibits.trace(seen, "trap: every event of the region of interest "
                            "(virtlab trace fidelity.popf --backend trap)")]
    shown += [exhibits.unit(bt, u, f"bt: the translation holding the popf at {s['guest']:#010x}")
              for u, s in popfs[:1]]
    return Lesson(NAME, "popf, the Popek-Goldberg hole", QUESTION,
                  {r.label: r for r in (native, trap, hw, bt, pv, seen)}, claims, shown)


QUESTION = (
    "fidelity.popf: the guest kernel enables interrupts, pops an EFLAGS image with IF "
    "clear, and reads IF back, once per iteration.  On IA-32 a popf that runs above "
    "IOPL does not fault when it tries to change IF; it leaves IF as it was.  Which "
    "back ends give the kernel the answer it gets on the bare machine, and which see "
    "the popf at all?")


def _is_popf(site):
    return site["text"].startswith("popf")


def _trap_saw_nothing(trap, seen, popfs):
    """The trace of the whole region has no event at the kernel's popf (its
    address from bt's translation of the same image), though it ran."""
    at = {s["guest"] for _, s in popfs}
    events = [e for e in seen.trace if e["eip"] in at]
    return Claim(
        "trap-popf-no-exit",
        "The popf never reached the VMM: trap counted {popfs} unprivileged executions of it "
        "in the region (sensitive.popf) and {exits} exits for it, and the trace of the "
        "whole region ({iterations} iterations, {traced} events) has {at_popf} events at "
        "the popf at {addr}.",
        {"popfs": runs.roi(trap, "sensitive.popf"),
         "exits": runs.roi(trap, "exit.priv.popf"),
         "iterations": runs.field(seen, "iterations"),
         "scale": runs.field(seen, "scale"),
         "traced": runs.derived(len(seen.trace), f"{seen.label}: events traced",
                                {"run": seen.label, "count": "trace"}),
         "at_popf": runs.derived(len(events), f"{seen.label}: events at the popf's address",
                                 {"run": seen.label, "count": "trace", "eip": sorted(at)}),
         "addr": runs.derived(min(at) if at else None, "bt (translations): where the kernel's "
                              "popf is", {"run": "bt", "site": "popf"}, fmt="hex")},
        All(gt("popfs", Lit(0)), eq("exits", Lit(0)), eq("iterations", "scale"),
            eq("at_popf", Lit(0)), gt("addr", Lit(0))))


def _bt_rewrites(bt, native, popfs):
    marks = sorted({s["mark"] for _, s in popfs})
    return Claim(
        "bt-rewrites-popf",
        "Under bt the kernel read back IF = {bt_if}, as natively: bt translated the popf "
        "at {addr} as an {mark} sequence and ran it {intc} times in the region "
        "(bt.intc.popf), without leaving the translation cache.",
        {"bt_if": runs.console(bt, KERNEL_IF), "native_if": runs.console(native, KERNEL_IF),
         "intc": runs.roi(bt, "bt.intc.popf"),
         "mark": runs.derived("/".join(marks) or None, "bt: how its popf sites were translated",
                              {"run": bt.label, "site": "popf"}),
         "addr": runs.derived(popfs[0][1]["guest"] if popfs else None,
                              "bt: the first popf site", {"run": bt.label, "site": "popf"},
                              fmt="hex")},
        All(eq("bt_if", "native_if"), gt("intc", Lit(0)), eq("mark", Lit("in-TC"))))
