"""Provenance: where a set of results came from.

A saved bench is re-analysed later, maybe on another machine, maybe for a
paper: its modeled figures depend on the code (version, commit) and its host
figures on the host and the emulator libraries.  So `virtlab bench --save`
records all of it beside the results, `virtlab report` shows it, and
`virtlab --version` prints the same facts about the running copy.

Nothing here may fail a run: a fact that cannot be found is None.
"""
import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from . import __version__

# The libraries whose versions change host figures (and, for a decoder bug,
# what a trace shows); by distribution name.
LIBRARIES = {"unicorn": "unicorn", "capstone": "capstone", "keystone": "keystone-engine"}


def collect(argv=None, **settings):
    """The provenance record of a run started now with `argv` (the command's
    arguments, without the program name) and `settings` (profile, scale, ...)."""
    return {"virtlab": __version__, "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": {"cpu": cpu_model(), "cores": os.cpu_count(),
                     "system": f"{platform.system()} {platform.release()}"},
            "python": platform.python_version(),
            **{name: library_version(dist) for name, dist in LIBRARIES.items()},
            "command": None if argv is None else " ".join(["virtlab", *map(str, argv)]),
            **settings}


def library_version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model():
    """The host CPU's model name (Linux's /proc/cpuinfo, else what Python knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit(root=Path(__file__).resolve().parent.parent):
    """The commit of the checkout this virtlab runs from ("+" when it has local
    changes), or None: an installed copy, no git, or git failing."""
    def git(*args):
        # --no-optional-locks: asking must never write the index.
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                              capture_output=True, text=True, timeout=5, check=True).stdout
    try:
        # A copy installed inside some other repository is not that repository's.
        if Path(git("rev-parse", "--show-toplevel").strip()).resolve() != root:
            return None
        commit = git("rev-parse", "--short=12", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+" if dirty else "")


def version_text():
    """`virtlab --version`: this copy and what it runs on."""
    p = collect()
    commit = f" (commit {p['commit']})" if p["commit"] else ""
    libs = ", ".join(f"{name} {p[name] or 'unknown'}" for name in LIBRARIES)
    return (f"virtlab {p['virtlab']}{commit}\n"
            f"Python {p['python']}, {libs}\n"
            f"host: {p['host']['cpu'] or 'unknown CPU'}, {p['host']['cores']} cores, "
            f"{p['host']['system']}\n")


def describe(p):
    """A saved provenance record as lines of text (for `virtlab report`); an
    empty record (a file saved before provenance was kept) says so."""
    if not p:
        return ["no provenance recorded (saved by an older virtlab)"]
    host = p.get("host") or {}
    libs = ", ".join(f"{name} {p.get(name) or 'unknown'}" for name in LIBRARIES)
    commit = f" (commit {p['commit']})" if p.get("commit") else ""
    lines = [f"saved {p.get('date') or 'at an unknown date'} by virtlab "
             f"{p.get('virtlab') or 'unknown'}{commit}",
             f"host: {host.get('cpu') or 'unknown CPU'}, {host.get('cores') or '?'} cores, "
             f"{host.get('system') or 'unknown system'}; Python {p.get('python') or '?'}, "
             f"{libs}"]
    settings = {k: v for k, v in p.items() if k in ("profile", "scale", "repeat", "jobs")}
    if settings:
        lines.append("settings: " + ", ".join(f"{k} {_setting(v)}" for k, v in settings.items()))
    if p.get("command"):
        lines.append(f"command: {p['command']}")
    if p.get("interrupted"):
        lines.append("interrupted: only the rows finished before Ctrl-C were kept")
    return lines


def _setting(value):
    return "default" if value is None else value
