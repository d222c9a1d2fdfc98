"""`virtlab demo [NAME]`: short lessons that run real guests and say only
what the runs showed.

Each lesson is one module with NAME, SUMMARY and lesson(): it runs catalog
workloads at small scales under the back ends that matter for it, builds its
sentences as Claims over the values of those runs (claims.py), and returns a
Lesson that render.py prints as text or JSON.  A claim whose condition fails
on the runs is not printed; what was observed is printed in its place.

Reading order: claims.py (what a claim is), runs.py (how evidence is taken),
then any lesson; popf.py is the shortest.
"""
from . import cli_sti, exit_cost_history, popf, pv_batching, redpill, shadow_paging, syscall

LESSONS = {m.NAME: m for m in (popf, redpill, cli_sti, shadow_paging, pv_batching,
                               syscall, exit_cost_history)}


def names():
    return list(LESSONS)


def summary(name):
    return LESSONS[name].SUMMARY


def lesson(name):
    """Run the lesson `name` (KeyError if there is none) and return it."""
    return LESSONS[name].lesson()
