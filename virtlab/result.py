"""The record of one run, as the harness returns it and JSON carries it."""
import hashlib
import json
from dataclasses import asdict, dataclass, field


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
    host_seconds: float = 0.0
    roi_host_seconds: float = None
    iterations: int = 0
    exits: int = 0
    modeled_cycles: float = None
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
