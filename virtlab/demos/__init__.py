"""`virtlab demo [NAME]`: short lessons that run real guests and say only
what the runs showed.

Each lesson is one module with NAME, SUMMARY and lesson(): it runs catalog
workloads (at small scales, unless the scale is the point) under the back
ends that matter for it, builds its sentences as Claims over the values of
those runs (claims.py), and returns a Lesson that render.py prints as text
or JSON.  A claim whose condition fails on the runs is not printed; what was
observed is printed in its place.

Reading order: claims.py (what a claim is), runs.py (how evidence is taken),
then any lesson; popf.py is the shortest.
"""
import contextlib
import os
import tempfile

from .. import count_cache
from . import (cli_sti, exit_cost_history, popf, pv_batching, redpill, shadow_paging, syscall,
               translation)

LESSONS = {m.NAME: m for m in (popf, redpill, cli_sti, shadow_paging, translation,
                               pv_batching, syscall, exit_cost_history)}


def names():
    return list(LESSONS)


def summary(name):
    return LESSONS[name].SUMMARY


def lesson(name):
    """Run the lesson `name` (KeyError if there is none) and return it."""
    return LESSONS[name].lesson()


def lesson_counts(progress=None):
    """Every instruction count the lessons need, counted afresh: each lesson
    run once with an empty count cache of its own and the bundle switched
    off, and what it counted read back.  `python -m virtlab.count_cache
    --bundle` ships them with the images, so that a lesson's first run on
    a new machine counts nothing, as the default bench's does not."""
    with tempfile.TemporaryDirectory(prefix="virtlab-lessons-") as cache, \
            _environment(VIRTLAB_CACHE=cache, VIRTLAB_NO_BUNDLED_COUNTS="1"):
        for name in names():
            if not lesson(name).ok:
                raise RuntimeError(f"lesson {name}: a run failed; nothing to bundle")
            if progress is not None:
                progress(f"lesson {name}: counted")
        return count_cache.entries_in(cache)


@contextlib.contextmanager
def _environment(**settings):
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    count_cache.clear_bundle()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        count_cache.clear_bundle()
