"""Repetitions of one run, for host-time figures.

A run is deterministic: the same guest under the same back end executes the
same instructions, records the same counters and prints the same console
whatever the host is doing.  Only the host time moves, and on a shared machine
it moves a lot (a factor of 40 between two runs of one row has been seen), so
one sample is not a measurement.  `repeated` runs a guest N times, checks that
everything but the host time is identical (a difference is a bug in virtlab,
never noise, so it stops the bench), and keeps every host-time sample.

The result is the first run with its host times replaced by their medians;
the samples themselves travel with it (RunResult.host_samples and
roi_host_samples) into --save, and analysis/hosttime.py derives the minimum
and the spread from them.
"""
import dataclasses
from statistics import median

# What a repetition must reproduce exactly.
DETERMINISTIC = ("ok", "exit_status", "reason", "console", "counters", "roi_counters",
                 "iterations", "vmm_entries", "details")


class NondeterministicRun(RuntimeError):
    """Two repetitions of one run differ in more than their host time."""


def repeated(run_once, times):
    """`run_once()` `times` times (at least once) -> one RunResult with the
    median host times and every sample.  A failed run is not repeated: its
    host time measures nothing."""
    runs = [run_once()]
    while len(runs) < times and runs[0].ok:
        again = run_once()
        _check_same(runs[0], again, len(runs) + 1)
        runs.append(again)
    return combined(runs)


def combined(runs):
    whole = [r.host_seconds for r in runs]
    roi = [r.roi_host_seconds for r in runs if r.roi_host_seconds is not None]
    return dataclasses.replace(
        runs[0], host_seconds=median(whole), host_samples=whole,
        roi_host_seconds=median(roi) if roi else None, roi_host_samples=roi)


def _check_same(first, again, n):
    for name in DETERMINISTIC:
        a, b = getattr(first, name), getattr(again, name)
        if a != b:
            raise NondeterministicRun(
                f"{first.workload} under {first.backend}: repetition {n} differs from the "
                f"first in {name} ({_difference(a, b)}); runs must be deterministic, so "
                "this is a bug in virtlab or the back end")


def _difference(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return ", ".join(f"{k}: {a.get(k)!r} then {b.get(k)!r}" for k in keys[:3])
    return f"{a!r} then {b!r}"
