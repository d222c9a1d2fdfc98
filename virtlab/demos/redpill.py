"""redpill: sidt and sgdt tell a program where the descriptor tables are.

Neither instruction is privileged, so a VMM that keeps its own tables in the
hardware registers (trap: its IDT and GDT in the VMM window) cannot stop a
program from reading them: Rutkowska's "Red Pill" (2004).  fidelity.sidt
reads the registers from the kernel and from user mode.
"""
from .. import backend as backends
from . import exhibits, runs
from .claims import All, Claim, Lesson, Lit, eq, ge, gt, ne

NAME = "redpill"
SUMMARY = "sidt/sgdt from user mode: under which back ends they show the VMM's tables"
WORKLOAD, SCALE = "fidelity.sidt", 2
USER_IDT = r"sidt: user IDT base (0x[0-9a-f]+)"
USER_GDT = r"sgdt: user GDT base (0x[0-9a-f]+)"
KERNEL_IDT = r"sidt: kernel IDT base (0x[0-9a-f]+)"
LOADED_IDT = r"sidt: kernel IDT base 0x[0-9a-f]+ \([^)]*\), kernel loaded (0x[0-9a-f]+)"
# Where every VMM here keeps its own structures: the top 64 MiB of the
# address space (the VMM window of trap, hw and bt; Xen's hypervisor hole).
VMM_AREA = 0xFC000000

QUESTION = (
    "fidelity.sidt: the kernel loads its IDT and GDT, then sidt and sgdt read the "
    "registers back, from the kernel and from user mode.  Neither instruction is "
    "privileged, so neither traps at any ring.  Natively they show the kernel's own "
    "tables.  Under which back ends can a user program see that something else owns "
    "the machine?")


def lesson():
    got = {b: runs.run(WORKLOAD, b, SCALE) for b in ("native", "trap", "hw", "bt", "pv")}
    native = got["native"]
    claims = [
        Claim("native-own-tables",
              "Natively user mode read the kernel's own IDT base, {user_idt}: the table the "
              "kernel loaded ({loaded}).",
              {"user_idt": runs.console(native, USER_IDT, "hex"),
               "loaded": runs.console(native, LOADED_IDT, "hex")},
              eq("user_idt", "loaded")),
        _reveals(got["trap"], native, "trap-reveals",
                 "Under trap user mode read an IDT base of {user_idt} and a GDT base of "
                 "{user_gdt}, in the VMM's area (at or above {area}), where natively it "
                 "read {native_idt}: the program can tell it is not on the bare machine."),
        Claim("trap-sidt-unseen",
              "None of those reads reached trap's VMM: the run counted {sidts} executions "
              "of sidt as sensitive, unprivileged instructions (sensitive.sidt, an "
              "observer's count) and {exits} exits for them.",
              {"sidts": runs.total(got["trap"], "sensitive.sidt"),
               "exits": runs.total(got["trap"], "exit.priv.sidt")},
              All(gt("sidts", Lit(0)), eq("exits", Lit(0)))),
        _hides(got["hw"], native, "hw-hides",
               "Under hw user mode read the IDT base the kernel loaded, {user_idt}, and "
               "the same IDT and GDT bases as natively."),
        _hides(got["bt"], native, "bt-hides",
               "Under bt user mode read the IDT base the kernel loaded, {user_idt}, and "
               "the same IDT and GDT bases as natively."),
        Claim("bt-answers",
              "bt gave the virtual answers itself: the translated kernel's sidt became "
              "callouts (bt.callout.sidt = {kernel}), and user mode's sidt exited to bt to "
              "be answered (exit.priv.sidt = {user}), over the whole run.",
              {"kernel": runs.total(got["bt"], "bt.callout.sidt"),
               "user": runs.total(got["bt"], "exit.priv.sidt")},
              All(gt("kernel", Lit(0)), gt("user", Lit(0)))),
        _reveals(got["pv"], native, "pv-reveals",
                 "Under pv user mode read an IDT base of {user_idt} and a GDT base of "
                 "{user_gdt}, in the hypervisor's area (at or above {area}), where natively "
                 "it read {native_idt}.  pv declares this: fidelity.sidt is among the workloads "
                 "it lists as unfaithful (Backend.unfaithful: {declared})."),
    ]
    shown = [exhibits.console(got.values(), "what each guest printed (user mode)",
                              ("sidt: user", "sgdt: user"))]
    return Lesson(NAME, "redpill: sidt and sgdt reveal the VMM", QUESTION,
                  {r.label: r for r in got.values()}, claims, shown)


def _reveals(run, native, id_, says):
    evidence = {"user_idt": runs.console(run, USER_IDT, "hex"),
                "user_gdt": runs.console(run, USER_GDT, "hex"),
                "native_idt": runs.console(native, USER_IDT, "hex"),
                "area": runs.derived(VMM_AREA, "where the VMM window begins", fmt="hex")}
    cond = [ge("user_idt", "area"), ge("user_gdt", "area"), ne("user_idt", "native_idt")]
    if "{declared}" in says:
        be = run.result.backend
        evidence["declared"] = runs.derived(
            WORKLOAD in backends.load(be).unfaithful, f"{be}: its Backend.unfaithful",
            {"backend": be, "unfaithful": WORKLOAD})
        cond.append(eq("declared", Lit(True)))
    return Claim(id_, says, evidence, All(*cond))


def _hides(run, native, id_, says):
    return Claim(id_, says,
                 {"user_idt": runs.console(run, USER_IDT, "hex"),
                  "loaded": runs.console(run, LOADED_IDT, "hex"),
                  "native_idt": runs.console(native, USER_IDT, "hex"),
                  "user_gdt": runs.console(run, USER_GDT, "hex"),
                  "native_gdt": runs.console(native, USER_GDT, "hex")},
                 All(eq("user_idt", "loaded"), eq("user_idt", "native_idt"),
                     eq("user_gdt", "native_gdt")))
