"""Atomic file writes and a one-writer lock for run folders.

Every file alexbench writes goes through :func:`atomic_write` or :func:`atomic_path`:
the data lands in a temporary file in the same directory, is fsynced, then renamed
over the target, and the directory is fsynced. A crash or a full disk therefore
leaves either the old file or the new one, never half of one.

A temporary file is named ``.<target>.<host>-<pid>-<random><suffix>.tmp``. A writer
killed mid-write (SIGKILL, OOM killer) cannot remove its own; the next atomic write
into the same folder removes every such file whose writer, on this host, is gone.

Every rename that publishes a file goes through :func:`publish`, which tells the
hooks registered with :func:`add_file_hook`: once before the rename (the complete
temp file is in place) and once after it (before the folder is fsynced). Tests use
this to stop a process at exactly these moments.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from alexbench.errors import UserError

__all__ = ["atomic_path", "atomic_write", "atomic_write_text", "atomic_write_json", "strict_json", "remove_stale_temps",
           "RunLock", "FileHook", "add_file_hook", "file_hook", "publish", "pid_alive"]

#: ``hook(temp, target, when)``: ``when`` is "renaming" (just before ``temp`` replaces ``target``)
#: or "renamed" (just after, before the folder is fsynced)
FileHook = Callable[[Path, Path, str], None]
_file_hooks: list[FileHook] = []


def add_file_hook(hook: FileHook) -> Callable[[], None]:
    """Call ``hook`` around every rename that publishes a file; returns a function that removes it."""
    _file_hooks.append(hook)
    return lambda: _file_hooks.remove(hook) if hook in _file_hooks else None


@contextlib.contextmanager
def file_hook(hook: FileHook) -> Iterator[None]:
    """:func:`add_file_hook` for the duration of a ``with`` block."""
    remove = add_file_hook(hook)
    try:
        yield
    finally:
        remove()


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """``os.replace(tmp, target)``, with the file hooks told before and after."""
    tmp, target = Path(tmp), Path(target)
    for hook in list(_file_hooks):
        hook(tmp, target, "renaming")
    os.replace(tmp, target)
    for hook in list(_file_hooks):
        hook(tmp, target, "renamed")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[a-z0-9_]{8}.*\.tmp$")


def remove_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that dead writers on this host left in ``directory``."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(os.fspath(directory)))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if not m or m["host"] != _HOST:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _disk_error(path: Path, exc: OSError) -> UserError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"{path}: no space left on device; the previous file was kept")
    return UserError(f"{path}: cannot write ({exc.strerror or exc})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    Use this for libraries that want a file name (``torch.save``, ``np.savez``,
    ``model.save_weights``). The caller writes the temp file; we fsync and rename.
    On any exception the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_HOST}-{os.getpid()}-",
                                    suffix=(suffix or target.suffix) + ".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        publish(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _disk_error(target, exc) from exc
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # some writers turn a failed write into another error (torch.save: RuntimeError "unexpected
        # pos"); the OSError of the full disk is then its context
        ctx = exc.__context__
        if isinstance(exc, Exception) and isinstance(ctx, OSError) and ctx.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_error(target, ctx) from exc
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))


def strict_json(obj: object, indent: int | None = 2, default: Callable[[object], object] | None = None) -> str:
    """``obj`` as strict JSON (RFC 8259), the only way alexbench writes a JSON file.

    NaN and ±infinity, which ``json.dumps`` would write as the bare words ``NaN`` and
    ``Infinity`` that strict parsers (``JSON.parse``, ``jq``) refuse, become ``null``; a
    writer that knows why a value is missing says so next to it. NumPy scalars and
    arrays become numbers and lists, paths strings; ``default`` converts anything else.
    """
    def fallback(o: object) -> object:
        return str(o) if isinstance(o, Path) or default is None else _finite(default(o))

    return json.dumps(_finite(obj), indent=indent, sort_keys=False, allow_nan=False,
                      default=fallback if default else _json_default)


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as strict JSON (:func:`strict_json`), atomically."""
    atomic_write_text(path, strict_json(obj) + "\n")


def _finite(obj: object) -> object:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # scalars and arrays
        return _finite(obj.tolist())
    return obj


def _json_default(obj: object) -> object:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def pid_alive(pid: int) -> bool:
    """True while a process ``pid`` exists on this host (also one of another user); False for pid <= 0."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One writer per output folder: an advisory ``flock`` on a lock file that records the holder's PID.

    The kernel holds the lock for as long as the holder's file descriptor is open, and
    drops it when the process ends in any way (SIGKILL included). A lock file left by a
    dead process is therefore just an unlocked file: the next writer locks it, records
    its own PID and carries on (``took_over_from`` is the PID it found). Nothing is
    decided from PIDs, so a reused PID cannot keep a stale lock alive, and two writers
    taking over the same stale lock cannot both win: ``flock`` lets exactly one in. The
    PID in the file only names the holder in the refusal message.

    The holder removes the file when it releases the lock (while still holding it). A
    writer that opened the file just before that removal and locks it just after sees
    that the path no longer names the file it locked, and starts over on a fresh file.

    The lock file descriptor is not inherited across ``exec``; a child made with a bare
    ``fork`` (no ``exec``) shares the lock until it exits.
    """

    def __init__(self, directory: str | os.PathLike, name: str = ".alexbench.lock") -> None:
        self.path = Path(directory) / name
        self.took_over_from: int | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # a retry needs a release between our open and our flock: rare
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _holder_pid(fd)
                os.close(fd)
                who = f"PID {owner}" if owner is not None else "PID unknown"
                raise UserError(f"{self.path.parent}: another alexbench process ({who}) is writing here; "
                                f"wait for it to finish") from None
            except BaseException:
                os.close(fd)
                raise
            if not self._names(fd):  # released and removed between our open and our flock
                os.close(fd)
                continue
            previous = _read_pid(fd)
            record = f"{os.getpid()}\n".encode()
            os.pwrite(fd, record, 0)  # then cut: a reader never sees an empty file
            os.ftruncate(fd, len(record))
            os.fsync(fd)
            self.took_over_from = previous if previous is not None and previous > 0 else None
            self._fd = fd
            return self
        raise UserError(f"{self.path}: could not take the lock (it kept being released and removed under us)")

    def _names(self, fd: int) -> bool:
        """Whether ``self.path`` still names the file open on ``fd``."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # remove the file only if it is still ours (same file, our PID): never someone else's
            if self._names(fd) and _read_pid(fd) == os.getpid():
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_pid(fd: int, wait: float = 1.0) -> int | None:
    """The PID of the process holding the lock on ``fd``'s file, for the refusal message.

    A holder that has just taken over a stale lock may not have written its PID yet; the
    file then still names the dead process. Liveness only picks the message here, never
    the lock: read again for up to ``wait`` seconds until the PID is a live process.
    """
    deadline = time.monotonic() + wait
    while True:
        pid = _read_pid(fd)
        if (pid is not None and pid_alive(pid)) or time.monotonic() > deadline:
            return pid
        time.sleep(0.005)


def _read_pid(fd: int) -> int | None:
    """The PID recorded in an open lock file, or None if it holds none."""
    try:
        return int(os.pread(fd, 64, 0).decode("ascii").split()[0])
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None
