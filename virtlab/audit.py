"""`virtlab audit`: which privileged and which sensitive-but-unprivileged
instructions a guest really executes, counted under `native`.

Every instruction of either class in code the CPU translates gets a
translation-time hook that counts its executions; the run otherwise proceeds
natively.  A rep-prefixed ins or outs counts once per port access (each is
an I/O operation a VMM must handle).  The result is the guest's own
Popek-Goldberg profile: the
sensitive-unprivileged rows are the instructions that a classic
trap-and-emulate VMM cannot virtualize on IA-32.
"""
from .popek_goldberg import CLASSIFIED_IDS, classify, repeat_count_mask


class Audit:
    def __init__(self, machine):
        self.machine = machine
        self.counts = {}                     # (class, name, ring) -> executions
        self.counted = False                 # whether the last hit was counted
        machine.intercepts.watch(self._select, self._hit, self._retried, ids=CLASSIFIED_IDS)

    def _select(self, insn, cpl):
        cls, name = classify(insn)
        if cls is None:
            return None
        return cls, name, "kernel" if cpl < 3 else "user", repeat_count_mask(insn)

    def _hit(self, address, selected):
        # A rep-prefixed ins or outs executes once per port access it makes:
        # the CPU model's last entry, with the count at zero, makes none.
        mask = selected[3]
        self.counted = not mask or self._count_register() & mask != 0
        if self.counted:
            key = selected[:3]
            self.counts[key] = self.counts.get(key, 0) + 1

    def _count_register(self):
        st = self.machine.state
        if not st.live:
            st.save()
        return st.reg("ecx")

    def _retried(self, address, selected):
        if self.counted:
            self.counts[selected[:3]] -= 1

    def rows(self):
        return [{"class": c, "instruction": n, "ring": r, "executions": k}
                for (c, n, r), k in sorted(self.counts.items()) if k > 0]
