"""Catalog runs shared by every test file and every test worker.

A run is deterministic: the same workload, back end and scale give the same
counters, console and status every time (tests/test_conformance.py checks
this with runs of its own, made afresh).  So a test that only reads a run's
record need not make it again when another test, in this file or another,
already did; test_backends, test_conformance, test_bt, test_workloads and
test_pv_workloads ask for many of the same runs.

Test workers are separate processes (pytest-xdist), so the record is shared
through a directory of the test session's that every worker sees (conftest
points share() at it), one pickle per run.  A lock per run makes a second
worker that asks for a run under way wait for it instead of making it too.
Each caller gets its own copy of the record, so a test that edits one
changes nothing for the next.
"""
import hashlib
import os
import pickle
from pathlib import Path

from filelock import FileLock

import virtlab

_dir = None
_records = {}          # key -> pickled RunResult, in this process


def share(directory):
    """Keep the records in `directory` (None: in this process only)."""
    global _dir
    _dir = None if directory is None else Path(directory)


def run(workload, backend, scale):
    """The RunResult of `virtlab.run(workload, backend, scale=scale,
    model=False)`, made once per test session."""
    key = (workload, backend, scale)
    data = _records.get(key)
    if data is None:
        data = _records[key] = _shared(key)
    return pickle.loads(data)


def _shared(key):
    if _dir is None:
        return _make(key)
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:24]
    path = _dir / f"{name}.pickle"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            return path.read_bytes()
        data = _make(key)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)          # whole or absent: never half a record
        return data


def _make(key):
    workload, backend, scale = key
    return pickle.dumps(virtlab.run(workload, backend, scale=scale, model=False))
