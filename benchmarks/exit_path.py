"""Host cost of the machine's hot paths.

    python benchmarks/exit_path.py [--json] [--repeat N] [--only NAMES] [--profile NAME]
                                   [--calls | --instructions | --entries]

guest_mips      millions of guest instructions per second in a tight ALU loop
                that never exits (the ceiling for everything else); its ratio
                is raw_mips / guest_mips, the machine's cost on a loop that
                never leaves the CPU
store_mips      the same with one of its four instructions a store to a data
                page: every guest store takes the CPU model's slow path
                (docs/unicorn.md, item 36), so its ratio to raw_mips is what
                stores cost every guest, under every back end alike
gp_exit_us      one #GP from `cli` at ring 1, decoded and resumed past it
                (the exit path of trap-and-emulate), median microseconds
idt_syscall_us  `int 0x80` from ring 3 delivered through the guest IDT to a
                ring-0 handler that irets back (the native back end), median
                microseconds

Each figure is the median over --repeat batches.  For an exit a batch is two
guest runs, of n and of 2n iterations, and the figure comes from their
difference (guestbench.per_exit): what a run costs once, the machine's boot
and the guest's set-up, cancels.  guest_mips is one run.
Every figure is also printed as a ratio to the CPU model's own floor measured
in the same run (guestbench.py): floor_exit_us, a bare `int` into an empty
Python hook, and raw_mips, the same ALU loop on a bare Unicorn CPU.
"""
from guestbench import ALU_LOOP, main as bench_main, per_exit, timed_run

from virtlab import asmguest as A, x86
from virtlab.delivery import linear_view
from virtlab.native import Native


class SkipPrivileged(Native):
    """The skeleton of a trap-and-emulate exit: decode the faulting instruction
    (from the decode cache) and resume past it."""

    def exception(self, vector):
        st = self.machine.state
        if vector == x86.GP and st.cpl == 1:
            linear = st.seg_base_of("cs") + st.eip
            insn = self.machine.decoder.at(linear_view(st, self.machine.mem), linear)
            self.machine.counters["bench.gp"] += 1
            st.eip = st.eip + insn.size
            return
        super().exception(vector)


def guest_mips(n=25_000_000):
    # One run (a rate: its boot is a few milliseconds of about a hundred, and
    # a difference of two runs would double the noise of a figure that has
    # no exit in it).
    body = f"mov ecx, {n}\n" + ALU_LOOP + A.exit_with(0)
    dt, _ = timed_run(Native(), A.AsmGuest(body=body, paging=True))
    return 4 * n / dt / 1e6


def store_mips(n=2_000_000):
    # Four instructions, as in ALU_LOOP, one of them a store to a page the
    # guest only writes (no code on it); the xor leaves the address as it is.
    body = f"mov ecx, {n}\nmov ebx, 0x300000\nlp:\nmov [ebx], eax\nxor ebx, 0\ndec ecx\njnz lp\n"
    dt, _ = timed_run(Native(), A.AsmGuest(body=body + A.exit_with(0), paging=True))
    return 4 * n / dt / 1e6


def gp_exit_us(n=20_000):
    def run(k):
        ring1 = f"mov ecx, {k}\nlp:\ncli\ndec ecx\njnz lp\nint 0x81\n"
        g = A.AsmGuest(body=A.iret_to(1, A.RING1, A.STACK1), ring1=ring1, paging=True,
                       handlers={0x81: A.exit_with(0)}, user_vectors=(0x81,))
        dt, m = timed_run(SkipPrivileged(), g)
        assert m.counters["bench.gp"] == k
        return dt
    return per_exit(run, n)


def idt_syscall_us(n=20_000):
    def run(k):
        ring3 = f"mov ecx, {k}\nlp:\nint 0x80\ndec ecx\njnz lp\nint 0x81\n"
        g = A.AsmGuest(body=A.iret_to(3, A.RING3, A.STACK3), ring3=ring3, paging=True,
                       handlers={0x80: "iretd\n", 0x81: A.exit_with(0)},
                       user_vectors=(0x80, 0x81))
        dt, m = timed_run(Native(), g)
        assert m.counters["native.syscall"] == k + 1
        return dt
    return per_exit(run, n)


if __name__ == "__main__":
    bench_main(__doc__, {"guest_mips": guest_mips, "store_mips": store_mips,
                         "gp_exit_us": gp_exit_us, "idt_syscall_us": idt_syscall_us},
               floor=True)
