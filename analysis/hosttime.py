"""Host-time figures of a row, from its repetitions (virtlab/repeat.py).

Host time is what this tool costs on the emulated CPU, not what the technique
costs, and on a shared machine it is noisy: so a row reports the median of its
samples, their minimum (the run least disturbed by the rest of the machine)
and their spread as the interquartile range (numpy's percentiles with linear
interpolation, as pytest-benchmark reports it).  The IQR needs no assumption
about the distribution and, unlike a bootstrap interval, is the same number
every time it is computed from the same samples.

The samples are those of the measured region: the region of interest when the
run has one, as for the modeled overhead, else the whole run.  A result saved
before repetitions existed has one sample, its recorded time.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HostTime:
    median: float
    minimum: float
    iqr: float            # None with a single sample: one run has no spread to tell
    samples: int


def region_samples(result):
    if result.roi_host_seconds is not None:
        return list(result.roi_host_samples) or [result.roi_host_seconds]
    return list(result.host_samples) or [result.host_seconds]


def host_time(result):
    xs = np.asarray(region_samples(result), dtype=float)
    q1, q3 = np.percentile(xs, [25, 75])
    return HostTime(float(np.median(xs)), float(xs.min()),
                    float(q3 - q1) if len(xs) > 1 else None, len(xs))
