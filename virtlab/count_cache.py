"""The caches of exact instruction counts.

Counting a run's guest instructions is a separate, slower pass (icount.py), and
its result depends only on the image, the workload, its scale and the back end
(all in the key, the image by its digest).  So it is counted once and kept:

  - in the user's cache on disk, under $VIRTLAB_CACHE (or ~/.cache/virtlab),
    one small file per key.  Several virtlab processes may count at once
    (bench --jobs, two users of one home directory): no file is ever read,
    modified and written back, and each is written whole under a temporary
    name and renamed into place, so a reader sees no file or a complete one;
  - in the bundle shipped beside the images (workloads/images/counts.json):
    the counts of every catalog workload at its default scale under every
    bundled back end, and of every run the lessons of `virtlab demo` make,
    so that the first `virtlab bench` or lesson on a new machine counts
    nothing.  Its keys hold the images' digests, so an entry of an
    image that has changed is simply never found; tests/test_count_bundle.py
    checks that it covers the committed images and that sampled entries are
    what counting gives.  `python -m virtlab.count_cache --bundle` rebuilds it.
"""
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path


def _cache_dir():
    """One file per key under here: processes that count concurrently never
    share a file they read, modify and write back."""
    base = os.environ.get("VIRTLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "virtlab")
    return Path(base) / "instructions"


def _key_file(key):
    return _cache_dir() / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def lookup(key):
    """The cached (instructions, roi_instructions) for `key`, or None: the
    bundle's entry, else the user's."""
    bundled = _bundle().get(key)
    if bundled is not None:
        return tuple(bundled)
    return _lookup_user(key)


BUNDLE = Path(__file__).resolve().parents[1] / "workloads" / "images" / "counts.json"


@lru_cache(maxsize=1)
def _bundle():
    """The shipped counts (key -> [instructions, roi_instructions]); empty if
    absent or unreadable, or if VIRTLAB_NO_BUNDLED_COUNTS is set (to measure
    a truly cold bench)."""
    if os.environ.get("VIRTLAB_NO_BUNDLED_COUNTS"):
        return {}
    try:
        entries = json.loads(BUNDLE.read_text()).get("entries", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, list) and len(v) == 2}


def clear_bundle():
    """Read the bundle afresh at the next lookup (after a change to the
    environment that decides whether it is used)."""
    _bundle.cache_clear()


def _lookup_user(key):
    """An entry is one small file written whole (see store), so a reader
    sees either no file or a complete one; anything else counts as a miss."""
    try:
        entry = json.loads(_key_file(key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    value = entry.get("value")
    if not (isinstance(value, list) and len(value) == 2):
        return None
    return tuple(value)


def store(key, result):
    """Write the entry for `key` atomically: to a private temporary file in the
    same directory, then os.replace over the final name."""
    path = _key_file(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"key": key, "value": list(result)}, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        pass                      # a read-only cache: count again next time


def entries_in(directory):
    """Every entry of the user's cache under `directory` (a VIRTLAB_CACHE),
    as {key: [instructions, roi_instructions]}: what the runs made with
    that cache counted."""
    found = {}
    for path in sorted((Path(directory) / "instructions").glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict) and isinstance(entry.get("key"), str) \
                and isinstance(entry.get("value"), list) and len(entry["value"]) == 2:
            found[entry["key"]] = entry["value"]
    return found


def write_bundle(entries, path=BUNDLE):
    """Write the bundle (sorted, so that rebuilding it gives the same bytes)."""
    text = json.dumps({"entries": dict(sorted(entries.items()))}, indent=1, sort_keys=True)
    Path(path).write_text(text + "\n")
    clear_bundle()


def _main(argv=None):
    import argparse
    p = argparse.ArgumentParser(prog="python -m virtlab.count_cache",
                                description="rebuild the bundled instruction counts")
    p.add_argument("--bundle", action="store_true", required=True,
                   help="count every catalog workload at its default scale under every "
                        "bundled back end, and every run of the lessons, and write "
                        "workloads/images/counts.json")
    p.parse_args(argv)
    # The one place below the front end that composes the lessons with the
    # catalog: the bundle is made for both.
    from .demos import lesson_counts
    from .harness import bundle_counts
    entries = bundle_counts(progress=print)
    entries.update(lesson_counts(progress=print))
    write_bundle(entries)


if __name__ == "__main__":
    _main()
