"""virtlab/outfile.py: how every output the user names is written, and the
check made before any work.  Only files under tmp_path are written: a device
is stood in for by a FIFO, a full disk by a write that fails, so that no test
can replace a system file even if the rule regresses."""
import errno
import fcntl
import os
import stat

import pytest

from virtlab import outfile


def fifo_reader(path):
    """A FIFO at `path` with its reading end open (so a writer's open does
    not wait), large enough for what a test writes; read() drains it."""
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)

    def read():
        chunks = []
        try:
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        except BlockingIOError:           # a writer still holds it open: nothing more yet
            pass
        finally:
            os.close(fd)
        return b"".join(chunks)
    return read


@pytest.fixture
def full_disk(monkeypatch):
    """Every write through outfile fails as on a full disk (as /dev/full does)."""
    class Full:
        def __init__(self, path, mode):
            self.f = open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()
    monkeypatch.setattr(outfile, "open", Full, raising=False)


def test_a_new_file_is_written_whole(tmp_path):
    outfile.write(tmp_path / "a.json", "new")
    outfile.write(tmp_path / "b.png", b"\x89PNG")
    assert (tmp_path / "a.json").read_text() == "new"
    assert (tmp_path / "b.png").read_bytes() == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.png"]


def test_a_symlink_is_followed_and_stays_a_link(tmp_path):
    (tmp_path / "data").mkdir()
    real = tmp_path / "data" / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("data/real.json")
    outfile.write(link, "new")
    assert link.is_symlink() and os.readlink(link) == "data/real.json"
    assert real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "link.json", "real.json"]


def test_a_dangling_symlink_makes_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to("real.json")
    outfile.write(link, "new")
    assert link.is_symlink() and (tmp_path / "real.json").read_text() == "new"


def test_a_fifo_is_written_in_place_not_replaced(tmp_path):
    path = tmp_path / "pipe"
    read = fifo_reader(path)
    outfile.write(path, "through the pipe")
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert read() == b"through the pipe"
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_symlink_to_a_fifo_is_written_in_place(tmp_path):
    read = fifo_reader(tmp_path / "pipe")
    (tmp_path / "link").symlink_to("pipe")
    outfile.write(tmp_path / "link", "x")
    assert (tmp_path / "link").is_symlink() and stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)
    assert read() == b"x"


def test_a_failed_write_keeps_the_old_file_and_names_the_users_path(tmp_path, full_disk):
    real = tmp_path / "real.json"
    real.write_text("old")
    (tmp_path / "link.json").symlink_to("real.json")
    with pytest.raises(OSError) as err:
        outfile.write(tmp_path / "link.json", "new")
    assert err.value.errno == errno.ENOSPC
    assert err.value.filename == str(tmp_path / "link.json")
    assert real.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]


def test_a_failed_write_in_place_is_an_error(tmp_path, full_disk):
    path = tmp_path / "pipe"
    read = fifo_reader(path)
    with pytest.raises(OSError) as err:
        outfile.write(path, "x")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert stat.S_ISFIFO(os.stat(path).st_mode) and read() == b""


@pytest.mark.parametrize("name, why", [
    ("dir", "that names a directory"), ("new/", "that names a directory"),
    ("missing/x.json", "no such writable directory"),
    ("file.txt/x.json", "no such writable directory"),
    ("fine.json", None), ("pipe", None), ("link-to-dir", "that names a directory"),
])
def test_problem(tmp_path, name, why):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "link-to-dir").symlink_to("dir")
    os.mkfifo(tmp_path / "pipe")
    got = outfile.problem(f"{tmp_path}/{name}")
    assert got == why if why is None else got.startswith(why), got
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file.txt", "link-to-dir",
                                                          "pipe"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_problem_sees_a_directory_where_nothing_can_be_made():
    # os.access says yes to root in /proc; making a file there fails.
    assert outfile.problem("/proc/virtlab-test.png") == "no such writable directory"


def test_a_file_descriptor_named_through_proc_is_appended_to_not_replaced(tmp_path):
    # `virtlab bench --out /dev/stdout >> log`: the name leads through /proc
    # to the regular file the shell opened; renaming over it would replace
    # the log instead of adding to it.
    log = tmp_path / "log"
    log.write_text("before\n")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{fd}")
        inode = log.stat().st_ino
        outfile.write(link, "table\n")
        assert log.read_text() == "before\ntable\n" and log.stat().st_ino == inode
        assert link.is_symlink()
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "stdout"]
