"""One writer per collection: an exclusive ``flock`` on ``DIR/.lock``, which names its holder.

Every writer (:meth:`embedforge.collection.Collection.save`, ``add``, ``delete``, an ``index``
run) holds :func:`write_lock` for the whole write; a second writer fails at once with
:class:`CollectionLocked` naming the holder (pid, host, start time). Readers never take it.

The kernel drops an ``flock`` when its process dies (``kill -9`` included), so a stale lock file
of a dead writer is simply not locked: the next writer takes it and records itself. The lock
file is never deleted while in use (that would let two writers lock two different inodes);
after locking, the path is checked to still name the locked file. The lock is re-entrant within
one process (an ``index`` run holds it and its collection's ``save`` takes it again) and refused
to a second thread while one holds it. ``fcntl`` locks work on local filesystems of Linux and
macOS; on network filesystems they are only as good as the server's lock support.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from embedforge.errors import InputError

__all__ = ["LOCK_FILE", "CollectionLocked", "write_lock", "holder", "is_held"]

LOCK_FILE = ".lock"  # inside the collection directory; kept between writers
HOLDER_WAIT_STEPS = 50  # a writer refused waits up to 50 x 10 ms for the holder to record itself

_HELD: dict[str, _Held] = {}  # resolved directory -> this process's hold on it
_GUARD = threading.Lock()


class CollectionLocked(InputError):
    """Another process (or thread) is writing this collection; the message names it."""


class _Held:
    def __init__(self, fd: int, thread: int) -> None:
        self.fd = fd
        self.thread = thread
        self.count = 1


def holder(directory: str | os.PathLike[str]) -> dict[str, object]:
    """What the lock file says about its last holder (``{}`` when unreadable): pid, host, started."""
    try:
        info = json.loads((Path(directory) / LOCK_FILE).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, object]) -> str:
    if not info:
        return "another process (holder unknown)"
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('started', '?')}"


def _current_holder(directory: Path) -> dict[str, object]:
    """The holder of a lock found taken: it records itself just after locking, so wait a moment for that."""
    for _ in range(HOLDER_WAIT_STEPS):
        info = holder(directory)
        if info.get("pid") is not None and not _dead_here(info):  # else: a dead writer's record, not yet replaced
            return info
        time.sleep(0.01)
    return {}


def _dead_here(info: dict[str, object]) -> bool:
    """Whether ``info`` names a process of this host that is no longer running."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _open_locked(directory: Path) -> int:
    """An fd of ``directory/.lock`` holding an exclusive flock; CollectionLocked when taken."""
    import fcntl

    path = directory / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise InputError(f"cannot write to the collection directory ({err.strerror})", directory) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CollectionLocked(
                    f"is being written by {_describe(_current_holder(directory))}; wait for it to finish "
                    f"(one writer at a time)", directory
                ) from None
            raise InputError(f"cannot lock the collection ({err.strerror})", directory) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file was replaced between open and flock: lock the new one


def _record(fd: int, directory: Path) -> None:
    stale = holder(directory)
    if stale.get("pid") is not None and stale.get("released") is not True:
        import logging

        logging.getLogger(__name__).warning(
            "%s: taking over the lock of %s, which is no longer running", directory, _describe(stale)
        )
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    data = (json.dumps(info) + "\n").encode()
    os.pwrite(fd, data, 0)  # then cut what is left of the old text: a reader never sees an empty file
    os.ftruncate(fd, len(data))


def _release(fd: int) -> None:
    import fcntl

    with contextlib.suppress(OSError):  # say the holder left cleanly, so the next one logs no take-over
        os.pwrite(fd, b'{"released": true}\n', 0)
        os.ftruncate(fd, len(b'{"released": true}\n'))
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def write_lock(directory: str | os.PathLike[str], *, create: bool = True) -> Iterator[Path]:
    """Hold the collection's writer lock for the ``with`` block (re-entrant in one thread).

    ``create``: make ``directory`` if missing; when the block fails and the directory was made
    here and holds nothing but the lock file, both are removed again (a failed first run
    leaves nothing behind).
    """
    root = Path(directory)
    made = False
    if not root.is_dir():
        if not create:
            raise InputError("is not a directory", root)
        try:
            root.mkdir(parents=True)
            made = True
        except FileExistsError:
            pass
        except OSError as err:
            raise InputError(f"cannot create the collection directory ({err.strerror})", root) from None
    key = str(root.resolve())
    me = threading.get_ident()
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held.thread != me:
                raise CollectionLocked(f"is being written by another thread of this process (pid {os.getpid()})", root)
            held.count += 1
        else:
            fd = _open_locked(root)
            try:
                _record(fd, root)
            except BaseException:
                _release(fd)
                raise
            held = _HELD[key] = _Held(fd, me)
    ok = False
    try:
        yield root
        ok = True
    finally:
        with _GUARD:
            held.count -= 1
            if held.count == 0:
                del _HELD[key]
                if made and not ok and [p.name for p in root.iterdir()] == [LOCK_FILE]:
                    # nobody else can hold it: we do, and other writers check the inode after locking
                    with contextlib.suppress(OSError):
                        os.unlink(root / LOCK_FILE)
                        root.rmdir()
                _release(held.fd)


def is_held(directory: str | os.PathLike[str]) -> bool:
    """Whether this process holds the writer lock of ``directory``."""
    return str(Path(directory).resolve()) in _HELD
