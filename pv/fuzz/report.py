"""The report: what the chunks add up to (calls, results, the hypervisor's
work, hypervisor errors and crashed domains), as a dict and as a summary."""
from collections import Counter

from .. import abi
from .call import NAMES, name_of

# What the hypervisor did for the guest (its counters): evidence that the
# calls got past the first check.
WORK = ("hypercall.mmu_update.items", "hypercall.mmuext_op.items", "hypercall.multicall.items",
        "evtchn.send", "pv.blk.requests", "pv.blk.sectors", "pv.virq.timer")


class Report:
    KEEP = 10                      # descriptions kept of errors, and of crashes

    def __init__(self, seed, count):
        self.seed, self.count = seed, count
        self.chunks = self.hypercalls = self.errors_returned = 0
        self.calls, self.entries, self.results = Counter(), Counter(), Counter()
        self.kinds = {}
        self.errors, self.crashes = [], []
        self.n_errors = self.n_crashes = 0
        self.checks = self.skipped = 0
        self.work = Counter({name: 0 for name in WORK})

    def chunk(self, index, mon, calls, outputs, esp):
        self.chunks += 1
        self.hypercalls += mon.issued
        self.checks += mon.checks
        self.skipped += mon.skipped
        for call in calls[:mon.issued]:
            self.calls[name_of(call.number)] += 1
            self.kinds.setdefault(call.kind, [0, 0])[0] += 1
        for i, (number, result) in enumerate(mon.top):
            self.results[_result_name(result)] += 1
            self.errors_returned += result is not None and result < 0
            self.kinds[calls[i].kind][1] += result is not None and result >= 0
            if i < len(outputs):
                self._promises(index, i, calls[i], result, outputs[i], esp)
        for number, result in mon.nested:
            self.entries[name_of(number)] += 1

    def count_work(self, counters):
        for name in WORK:
            self.work[name] += counters.get(name, 0)

    def _promises(self, index, i, call, result, out, esp):
        """What the ABI promises on every return from a hypercall."""
        if result is None:
            return
        if out[0] != esp or list(out[2:]) != [a & 0xFFFFFFFF for a in call.args]:
            self._error(index, i, call, "registers not preserved: ESP EBX..EDI came back as "
                        + " ".join(f"{v:#x}" for v in (out[0], *out[2:])))
        elif out[1] != result & 0xFFFFFFFF:
            self._error(index, i, call, f"EAX {out[1]:#x} is not the result {result}")
        elif call.number not in NAMES and result != -abi.ENOSYS:
            self._error(index, i, call, f"an unknown hypercall returned {result}, not -ENOSYS")
        elif result < 0 and result not in abi.ERROR_NAMES:
            self._error(index, i, call, f"returned {result}, which is not a Xen errno")

    def hypervisor_error(self, index, mon, calls, error):
        i = mon.issued - 1
        if mon.entry is not None:
            error += f" (in entry {mon.entry} of the multicall)"
        self._error(index, i, calls[i] if 0 <= i < len(calls) else None, error)

    def _error(self, index, i, call, what):
        self.n_errors += 1
        if len(self.errors) < self.KEEP:
            self.errors.append(_describe(index, i, call) | {"error": what})

    def crash(self, index, mon, calls, reason):
        self.n_crashes += 1
        if len(self.crashes) < self.KEEP:
            i = mon.issued - 1
            self.crashes.append(_describe(index, i, calls[i] if 0 <= i < len(calls) else None)
                                | {"reason": reason})

    def as_dict(self, seconds):
        return {
            "seed": self.seed, "count": self.count, "chunks": self.chunks,
            "hypercalls": self.hypercalls, "errors_returned": self.errors_returned,
            "succeeded": self.hypercalls - self.errors_returned,
            "hypervisor_errors": self.n_errors, "domains_crashed": self.n_crashes,
            "ok": self.n_errors == 0,
            "invariant_checks": {"run": self.checks, "unchanged": self.skipped},
            "hypervisor_counters": dict(self.work),
            "calls": dict(sorted(self.calls.items())),
            "multicall_entries": dict(sorted(self.entries.items())),
            "results": dict(sorted(self.results.items())),
            "kinds": {k: {"issued": n, "succeeded": ok}
                      for k, (n, ok) in sorted(self.kinds.items())},
            "errors": self.errors, "crashes": self.crashes,
            "seconds": round(seconds, 3),
        }


def _result_name(result):
    if result is None:
        return "no return"
    if result < 0:
        return abi.ERROR_NAMES.get(result, str(result))
    return "0" if result == 0 else "positive"


def _describe(index, i, call):
    d = {"chunk": index, "call": i}
    if call is not None:
        d |= {"hypercall": name_of(call.number), "kind": call.kind,
              "regs": [f"{v & 0xFFFFFFFF:#x}" for v in (call.number, *call.args)]}
    return d


def summary(r):
    lines = [f"pv.fuzz: {r['hypercalls']} hypercalls, seed {r['seed']}, {r['seconds']:.1f} s: "
             f"{r['succeeded']} succeeded, {r['errors_returned']} refused",
             f"hypervisor errors: {r['hypervisor_errors']}; domains crashed: "
             f"{r['domains_crashed']}"]
    for e in r["errors"]:
        lines.append(f"  error in chunk {e['chunk']}, call {e['call']} "
                     f"({e.get('kind', '?')}): {e['error']}")
    for c in r["crashes"]:
        lines.append(f"  crash in chunk {c['chunk']} at call {c['call']}: {c['reason']}")
    lines.append("ok" if r["ok"] else "FAILED")
    return "\n".join(lines) + "\n"
