"""The cost model: CPU profiles (per-event cycle costs, each with its source or a
written assumption) and the arithmetic that turns a run's counters into modeled
cycles.

    from analysis import profile
    from analysis.model import model, per_iteration, microseconds

    p = profile.load(profile.DEFAULT)          # or a bundled name, or a .toml path
    b = model(run.roi_counters, instructions, p, "trap")
    b.total, b.base_cycles, b.events, b.charges, b.overhead_by_event()

analysis/profile.py describes the profile format; analysis/counters.py collects
the counters the core and the installed back ends declare (virtlab/counters.py);
analysis/model.py says how they are charged.
The submodules are imported by name (``analysis.model`` is the module, its
function is ``analysis.model.model``).
"""

from analysis.profile import DEFAULT, EventCost, Profile, ProfileError, load, names

__all__ = ["DEFAULT", "EventCost", "Profile", "ProfileError", "load", "names"]
