"""The instructions that break classic virtualization, seen as they execute.

Popek and Goldberg (1974): a machine is classically virtualizable if every
sensitive instruction is privileged.  IA-32 is not: these read or change
privileged state without trapping when the guest kernel runs at ring 1, so
under `trap` they run unmodified and tell the guest the truth about the real
CPU (popf silently keeps IF, pushf shows the real IF, sidt shows the VMM's IDT,
push cs shows RPL 1, ...).  The VMM cannot stop that, but it can watch: every
such instruction in guest code gets a translation-time hook that counts its
executions (at any ring: a user-mode `sidt` is the classic "red pill"), and the
run reports them by mnemonic.
"""
from virtlab.popek_goldberg import SENSITIVE_IDS, sensitive_kind


# [tour trap 170] What trap cannot catch.
# popf, pushf, sgdt, sidt, smsw, push cs and their kind are sensitive but do not trap
# at ring 1: they run unmodified and tell the guest the truth about the real CPU
# (Popek and Goldberg's condition fails).  The audit watches them run, so each run
# reports what the guest may have seen.
class SensitiveAudit:
    def __init__(self, machine, backend):
        self.machine = machine
        self.backend = backend
        self.counts = {}
        machine.intercepts.watch(self._select, self._hit, self._retried, ids=SENSITIVE_IDS)

    def _select(self, insn, cpl):
        return sensitive_kind(insn)

    def _hit(self, address, kind):
        decoded = self.machine.decoder.at(self.backend.guest_view(), address)
        if decoded is None or sensitive_kind(decoded.insn) != kind:
            return False             # other code now lives at this address
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.machine.counters["sensitive." + kind.replace(" ", "_")] += 1

    def _retried(self, address, kind):
        self.counts[kind] -= 1
        self.machine.counters["sensitive." + kind.replace(" ", "_")] -= 1

    def sightings(self):
        return dict(sorted(self.counts.items()))
