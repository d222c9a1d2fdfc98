"""`virtlab audit`: which privileged and which sensitive-but-unprivileged
instructions a guest really executes, counted under `native`.

Every instruction of either class in code the CPU translates gets a
translation-time hook that counts its executions; the run otherwise proceeds
natively.  The result is the guest's own Popek-Goldberg profile: the
sensitive-unprivileged rows are the instructions that a classic
trap-and-emulate VMM cannot virtualize on IA-32.
"""
from .popek_goldberg import CLASSIFIED_IDS, classify


class Audit:
    def __init__(self, machine):
        self.machine = machine
        self.counts = {}                     # (class, name, ring) -> executions
        machine.intercepts.watch(self._select, self._hit, self._retried, ids=CLASSIFIED_IDS)

    def _select(self, insn, cpl):
        cls, name = classify(insn)
        if cls is None:
            return None
        key = (cls, name, "kernel" if cpl < 3 else "user")
        return key

    def _hit(self, address, key):
        self.counts[key] = self.counts.get(key, 0) + 1

    def _retried(self, address, key):
        self.counts[key] -= 1

    def rows(self):
        return [{"class": c, "instruction": n, "ring": r, "executions": k}
                for (c, n, r), k in sorted(self.counts.items()) if k > 0]
