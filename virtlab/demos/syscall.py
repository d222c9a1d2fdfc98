"""syscall: why a system call costs more under trap and bt than under hw and pv.

A guest's int 0x80 goes through the IDT the CPU is using.  Under trap and bt
that is the VMM's (the guest kernel runs deprivileged and must not own the
real one), so every system call traps into the VMM, which reflects it into
the guest kernel through the guest's own IDT.  VT-x lets the guest take it
itself; a pv kernel registers a trap gate the hypervisor installs in the real
IDT.  nano.syscall makes one getpid system call per iteration.
"""
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, ge, gt, lt

NAME = "syscall"
SUMMARY = "system calls: who handles them under each back end, and what that costs"
WORKLOAD, SCALE = "nano.syscall", 500

QUESTION = (
    "nano.syscall: one getpid system call (int 0x80) from user mode per iteration.  "
    "Natively the CPU delivers it through the kernel's IDT and the kernel returns with "
    "iret.  Who handles it under each back end, and what does that cost?")


def lesson():
    got = {b: runs.run(WORKLOAD, b, SCALE) for b in ("native", "trap", "hw", "bt", "pv")}
    traces = {b: runs.traced(WORKLOAD, b, SCALE, limit=3, label=f"{b} (trace)")
              for b in ("trap", "hw", "pv")}
    trap, hw, bt, pv, native = (got[b] for b in ("trap", "hw", "bt", "pv", "native"))
    claims = [
        _reflected(trap, "trap-reflects", "Under trap"),
        _reflected(bt, "bt-reflects", "Under bt"),
        Claim("bt-iret",
              "bt also had to step in on the way back: the kernel's iret to user mode was a "
              "callout {irets} times (bt.callout.iret).",
              {"irets": runs.roi(bt, "bt.callout.iret"),
               "iterations": runs.field(bt, "iterations")},
              ge("irets", "iterations")),
        Claim("hw-direct",
              "Under hw the guest took its system calls itself: {calls} delivered through the "
              "guest's IDT without an exit (native.syscall), {exits} exits in the region.",
              {"calls": runs.roi(hw, "native.syscall"), "exits": runs.roi(hw, "exit.total"),
               "iterations": runs.field(hw, "iterations")},
              All(ge("calls", "iterations"), eq("exits", Lit(0)))),
        Claim("pv-direct",
              "Under pv the system calls went through the direct trap gate: {calls} of them "
              "(pv.fast_syscall), {hypercalls} hypercalls and {bounces} bounces in the region.",
              {"calls": runs.roi(pv, "pv.fast_syscall"),
               "hypercalls": runs.roi(pv, "hypercall.total"),
               "bounces": runs.roi(pv, "pv.bounce"), "iterations": runs.field(pv, "iterations")},
              All(ge("calls", "iterations"), eq("hypercalls", Lit(0)), eq("bounces", Lit(0)))),
        _trace_exits(traces),
        Claim("cost",
              "Priced on {profile}, an iteration (one system call) costs {native} cycles "
              "natively, {hw} under hw, {pv} under pv, {trap} under trap and {bt} under bt.",
              {"profile": runs.field(trap, "profile"),
               **{b: runs.field(got[b], "modeled_cycles_per_iteration") for b in got}},
              All(gt("trap", "hw"), gt("trap", "pv"), gt("bt", "hw"), gt("bt", "pv"))),
        Claim("cost-why",
              "The difference is the VMM: per call, trap's reflection costs {trap_reflect} "
              "cycles (reflect.syscall) and bt's {bt_reflect} plus {bt_callouts} for its "
              "callouts (bt.callout), where hw's region has {hw_vmm} cycles of VMM events "
              "(exit.*, reflect.*, inject.*).",
              {"trap_reflect": runs.charged(trap, ["reflect."]),
               "bt_reflect": runs.charged(bt, ["reflect."]),
               "bt_callouts": runs.charged(bt, ["bt.callout"]),
               "hw_vmm": runs.charged(hw, ["exit.", "reflect.", "inject."])},
              All(gt("trap_reflect", Lit(0)), gt("bt_reflect", Lit(0)),
                  lt("hw_vmm", "trap_reflect"))),
    ]
    shown = [exhibits.trace(t, f"{b}: the first events of the region of interest "
                            f"(virtlab trace nano.syscall --backend {b})")
             for b, t in traces.items()]
    return Lesson(NAME, "syscall: through the VMM, or straight to the kernel", QUESTION,
                  {**{r.label: r for r in got.values()},
                   **{t.label: t for t in traces.values()}}, claims, shown)


def _reflected(run, id_, where):
    return Claim(
        id_,
        where + " the system calls trapped into the VMM, which reflected them into the "
        "guest kernel: {reflected} reflections (reflect.syscall) for {iterations} "
        "iterations of one call each; {exits} exits in the region in all.",
        {"reflected": runs.roi(run, "reflect.syscall"), "exits": runs.roi(run, "exit.total"),
         "iterations": runs.field(run, "iterations")},
        All(ge("reflected", "iterations"), ge("exits", "reflected")))


def _trace_exits(traces):
    def at_int80(b, exit_):
        return sum(1 for e in traces[b].trace
                   if e["instruction"] == "int 0x80" and e["exit"] == exit_)
    ev = {"trap": runs.derived(at_int80("trap", True), "trap (trace): exits at int 0x80",
                               {"run": "trap (trace)", "count": "trace", "exit": True}),
          "hw": runs.derived(at_int80("hw", False), "hw (trace): events at int 0x80 that "
                             "were not exits", {"run": "hw (trace)", "count": "trace",
                                                "exit": False}),
          "pv": runs.derived(at_int80("pv", False), "pv (trace): events at int 0x80 that "
                             "were not exits", {"run": "pv (trace)", "count": "trace",
                                                "exit": False}),
          "traced": runs.derived(len(traces["trap"].trace), "trap (trace): events traced",
                                 {"run": "trap (trace)", "count": "trace"})}
    return Claim(
        "trace",
        "The traces agree: each of trap's first {traced} events is an exit at int 0x80; "
        "hw's {hw} and pv's {pv} events at the same int 0x80 are not exits.",
        ev, All(eq("trap", "traced"), gt("trap", Lit(0)), gt("hw", Lit(0)), gt("pv", Lit(0))))
