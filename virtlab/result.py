"""The record of one run, as the harness returns it and JSON carries it."""
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from . import outfile


@dataclass
class RunResult:
    workload: str
    backend: str
    scale: int
    ok: bool
    exit_status: int = None
    reason: str = ""
    console: str = ""
    output_digest: str = ""
    matches_native: bool = None
    counters: dict = field(default_factory=dict)
    roi_counters: dict = field(default_factory=dict)
    # Host time of this tool on the emulated CPU (what the implementation costs
    # here, not what the technique costs): the whole run and its region of
    # interest, each the median over the repetitions (virtlab/repeat.py) ...
    host_seconds: float = 0.0
    roi_host_seconds: float = None
    # ... and every repetition's sample, in the order they ran.
    host_samples: list = field(default_factory=list)
    roi_host_samples: list = field(default_factory=list)
    iterations: int = 0
    vmm_entries: int = 0              # times the platform got control (not exit.total: docs/counters.md)
    instructions: int = None          # guest instructions (counting pass; None if not counted)
    roi_instructions: int = None
    modeled_cycles: float = None      # filled by the cost model (analysis/)
    modeled_roi_cycles: float = None
    modeled_cycles_per_iteration: float = None
    profile: str = None
    image: str = ""
    details: dict = field(default_factory=dict)     # back-end specific findings

    def to_dict(self):
        return asdict(self)

    def to_json(self, **kw):
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def digest(text):
    return hashlib.sha256(text.encode("latin-1")).hexdigest()


SAVED_FORMAT = "virtlab-bench/1"


class SavedResultsError(ValueError):
    pass


def save_results(path, results, meta=None):
    """A bench's raw results (counters, host times, outputs, instruction
    counts), enough to analyse them again under any profile."""
    doc = {"format": SAVED_FORMAT, "meta": meta or {},
           "results": [r.to_dict() for r in results]}
    # Whole or not at all, even on a second Ctrl-C while an interrupted
    # bench keeps its rows (outfile.py).
    outfile.write(path, json.dumps(doc, indent=1, sort_keys=True))


def load_results(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as exc:
        raise SavedResultsError(f"cannot read '{path}': {exc.strerror}") from None
    except ValueError as exc:
        raise SavedResultsError(f"'{path}' is not a saved bench (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != SAVED_FORMAT:
        raise SavedResultsError(f"'{path}' is not a saved bench (format {SAVED_FORMAT} expected)")
    records = doc.get("results")
    if not isinstance(records, list) or not records:
        raise SavedResultsError(f"'{path}': no results")
    meta = doc.get("meta")
    problem = _meta_problem({} if meta is None else meta)
    if problem:
        raise SavedResultsError(f"'{path}': {problem}")
    results, first = [], {}
    for i, d in enumerate(records):
        problem = _record_problem(d)
        if problem:
            raise SavedResultsError(f"'{path}': result {i}: {problem}")
        # A bench measures each workload once per back end and scale (its
        # repetitions are samples of one row): a second row would be a
        # second answer to the same question, and the tables show one.
        key = (d["workload"], d["backend"], d.get("scale"))
        if key in first:
            raise SavedResultsError(f"'{path}': result {i}: a second result of {key[0]} "
                                    f"under {key[1]} at scale {key[2]} (result {first[key]} "
                                    f"is the first)")
        first[key] = i
        results.append(RunResult.from_dict(d))
    return results, meta or {}


def _meta_problem(meta):
    """Why a saved file's record of itself cannot be shown, or None."""
    prov = meta.get("provenance") if isinstance(meta, dict) else None
    host = prov.get("host") if isinstance(prov, dict) else None
    for key, value in (("meta", meta), ("meta.provenance", prov),
                       ("meta.provenance.host", host)):
        if value is not None and not isinstance(value, dict):
            return f"'{key}' is not an object"
    return None


_TYPES = {"workload": str, "backend": str, "ok": bool, "iterations": int,
          "host_seconds": (int, float), "counters": dict, "roi_counters": dict}
_OPTIONAL = {"instructions": int, "roi_instructions": int, "roi_host_seconds": (int, float),
             "scale": int, "exit_status": int, "host_samples": list, "roi_host_samples": list,
             "matches_native": bool}


def _record_problem(d):
    """Why a saved record cannot be analysed, or None."""
    if not isinstance(d, dict):
        return "not an object"
    for key, kind in _TYPES.items():
        if not _is(d.get(key), kind):
            return f"'{key}' missing or not {getattr(kind, '__name__', 'a number')}"
    for key, kind in _OPTIONAL.items():
        if d.get(key) is not None and not _is(d[key], kind):
            return f"'{key}' has the wrong type"
    for key in ("iterations", "instructions", "roi_instructions"):
        if d.get(key) is not None and not _count(d[key]):
            return f"'{key}' is not a count"
    for key in ("counters", "roi_counters"):
        for name, n in d[key].items():
            if not _count(n):
                return f"{key}['{name}'] is not a count"
    for key in ("host_seconds", "roi_host_seconds"):
        if d.get(key) is not None and not _seconds(d[key]):
            return f"'{key}' is {d[key]!r}, not a number of seconds"
    for key in ("host_samples", "roi_host_samples"):
        for t in d.get(key) or ():
            if not _seconds(t):
                return f"{key} holds {t!r}, not a number of seconds"
    return None


def _is(value, kind):
    """isinstance, but a bool is no number (to Python, True is an int)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _count(n):
    # What a 64-bit counter holds: the model multiplies it by a cost as a
    # float, which a larger integer does not fit.
    return _is(n, int) and 0 <= n < 2**64


def _seconds(t):
    return _is(t, (int, float)) and math.isfinite(t) and t >= 0
