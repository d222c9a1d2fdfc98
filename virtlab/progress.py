"""Progress of a bench, always on stderr: stdout carries the table, which may be
redirected to a file (`virtlab bench > out.md`) while the user waits minutes.

On a terminal, a bar that erases itself when done; anywhere else (a CI log, a
file), one plain line per finished row, so a log shows how far it got.  But
nothing when stderr is the very file stdout writes to (`2>&1` into a pipe or
a file): the lines would land inside the table or CSV they describe.
"""
import io
import os
import sys


def progress(total, stream=None):
    stream = stream or sys.stderr
    if isatty(stream):
        return _Bar(total, stream)
    return _Quiet() if _is_stdout(stream) else _Lines(total, stream)


def _is_stdout(stream):
    """Does `stream` write to the same open file as stdout?"""
    try:
        mine, out = os.fstat(stream.fileno()), os.fstat(sys.stdout.fileno())
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return False                           # not a file (a StringIO), or closed
    return (mine.st_dev, mine.st_ino) == (out.st_dev, out.st_ino)


def isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):        # no isatty, or closed
        return False


def row_label(result):
    status = "ok" if result.ok else "FAILED"
    return f"{result.workload} under {result.backend}: {status}"


class _Lines:
    def __init__(self, total, stream):
        self.total, self.done, self.stream = total, 0, stream

    def advance(self, result):
        self.done += 1
        self.stream.write(f"[{self.done}/{self.total}] {row_label(result)}\n")
        self.stream.flush()

    def close(self):
        pass


class _Quiet:
    def advance(self, result):
        pass

    def close(self):
        pass


class _Bar:
    def __init__(self, total, stream):
        from rich.console import Console
        from rich.progress import Progress
        self._p = Progress(console=Console(file=stream), transient=True)
        self._p.start()
        self._task = self._p.add_task("bench", total=total)

    def advance(self, result):
        self._p.update(self._task, advance=1, description=row_label(result))

    def close(self):
        self._p.stop()
