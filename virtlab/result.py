"""The record of one run, as the harness returns it and JSON carries it."""
import hashlib
import json
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
    results = []
    for i, d in enumerate(records):
        problem = _record_problem(d)
        if problem:
            raise SavedResultsError(f"'{path}': result {i}: {problem}")
        results.append(RunResult.from_dict(d))
    return results, doc.get("meta", {})


_TYPES = {"workload": str, "backend": str, "ok": bool, "iterations": int,
          "host_seconds": (int, float), "counters": dict, "roi_counters": dict}
_OPTIONAL = {"instructions": int, "roi_instructions": int, "roi_host_seconds": (int, float),
             "scale": int, "exit_status": int, "host_samples": list, "roi_host_samples": list}


def _record_problem(d):
    """Why a saved record cannot be analysed, or None."""
    if not isinstance(d, dict):
        return "not an object"
    for key, kind in _TYPES.items():
        if not isinstance(d.get(key), kind) or (kind is int and isinstance(d.get(key), bool)):
            return f"'{key}' missing or not {getattr(kind, '__name__', 'a number')}"
    for key, kind in _OPTIONAL.items():
        if d.get(key) is not None and (not isinstance(d[key], kind) or isinstance(d[key], bool)):
            return f"'{key}' has the wrong type"
    for key in ("counters", "roi_counters"):
        for name, n in d[key].items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                return f"{key}['{name}'] is not a count"
    for key in ("host_samples", "roi_host_samples"):
        for t in d.get(key) or ():
            if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
                return f"{key} holds {t!r}, not a number of seconds"
    return None
