"""The on-disk cache of exact instruction counts.

Counting a run's guest instructions is a separate, slower pass (icount.py), and
its result depends only on the image, the workload, its scale and the back end:
so it is kept on disk, under $VIRTLAB_CACHE (or ~/.cache/virtlab), one small
file per key.  Several virtlab processes may count at once (bench --jobs, two
users of one home directory): no file is ever read, modified and written back,
and each is written whole under a temporary name and renamed into place, so a
reader sees no file or a complete one.
"""
import hashlib
import json
import os
import tempfile
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
    """The cached (instructions, roi_instructions) for `key`, or None.  An
    entry is one small file written whole (see store), so a reader
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
