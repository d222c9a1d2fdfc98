"""Every file written where the user said (--save, --out, --plot, a report's
figures): one rule for all of them, and the check made before any work by
the same rule.

A regular file, or a new one, is written whole beside itself (under a name
no other writer uses) and renamed over the old one, so that nothing ever sees
half of it: not a reader, not a second Ctrl-C while an interrupted bench
keeps its rows.  A symbolic link is followed first, so its target is what
gets replaced and the link stays a link.  A name that exists and is not a
regular file (a device, a FIFO), or one reached through /dev or /proc
(/dev/stdout, /dev/fd/3: a file descriptor the shell opened, perhaps on a
regular file with `>>`), is written in place, appended to: renaming over it
would put a file where /dev/null was, or replace the log that `>>` was
adding to.  The name "-" is standard output, as to most Unix tools.
"""
import os
import stat
import sys
import tempfile

STDOUT = "-"


def write(path, data):
    """Write `data` (str or bytes) to `path` by the rule above.  An OSError
    names `path`, the name the user gave, never the temporary file."""
    path = os.fspath(path)
    if path == STDOUT:
        _put_stdout(data)
        return
    try:
        if _special(path):
            _put(path, data, "a")
            return
        target = os.path.realpath(path)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".",
                                   dir=os.path.dirname(target))
        os.close(fd)
        try:
            _put(tmp, data, "w")
            os.replace(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
    except OSError as exc:
        exc.filename = path
        raise


def problem(path):
    """Why write() could not write `path`, or None: what can be told
    without writing it (a full disk shows only then)."""
    path = os.fspath(path)
    if path == STDOUT:
        return None
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        return "that names a directory, not a file"
    if _special(path):
        return None if os.access(path, os.W_OK) else "permission denied"
    # Make a file there and drop it: os.access answers for permissions
    # alone, which root always has, even in /proc where nothing can be made.
    try:
        with tempfile.TemporaryFile(dir=os.path.dirname(os.path.realpath(path))):
            pass
    except OSError:
        return "no such writable directory"
    return None


def _special(path):
    """Whether `path`, its links followed, exists and is not a regular
    file, or is reached through /dev or /proc."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True
    except OSError:
        return False
    return any(p.startswith(_KERNEL_TREES) for p in _link_chain(path))


_KERNEL_TREES = ("/dev/", "/proc/")


def _link_chain(path, limit=40):
    """`path` and every name its symbolic links lead through, absolute."""
    path = os.path.abspath(path)
    chain = [path]
    while os.path.islink(path) and len(chain) < limit:
        path = os.path.join(os.path.dirname(path), os.readlink(path))
        chain.append(os.path.abspath(path))
    return chain


def _put(path, data, mode):
    with open(path, mode + ("b" if isinstance(data, bytes) else "")) as f:
        f.write(data)


def _put_stdout(data):
    if isinstance(data, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(data)
        sys.stdout.flush()


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass
