"""Event counters: semantic events with stable dotted names.

Back ends count what really happened (an exit, a reflection, a hypercall, a native
event); the cost model turns these counts into modeled cycles, so a name is a
contract: see docs/counters.md for the list and meaning of each.
"""


class Counters(dict):
    """A dict of name -> count that starts every name at zero."""

    def __missing__(self, key):
        return 0

    def add(self, key, n=1):
        self[key] = self.get(key, 0) + n

    def snapshot(self):
        return {k: v for k, v in self.items() if v}

    @staticmethod
    def diff(after, before):
        out = {}
        for k, v in after.items():
            d = v - before.get(k, 0)
            if d:
                out[k] = d
        return dict(sorted(out.items()))
