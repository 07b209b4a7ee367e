"""Atomic file writes and a one-writer lock for run folders.

Every file alexbench writes goes through :func:`atomic_write` or :func:`atomic_path`:
the data lands in a temporary file in the same directory, is fsynced, then renamed
over the target, and the directory is fsynced. A crash or a full disk therefore
leaves either the old file or the new one, never half of one.

A temporary file is named ``.<target>.<host>-<pid>-<random><suffix>.tmp``. A writer
killed mid-write (SIGKILL, OOM killer) cannot remove its own; the next atomic write
into the same folder removes every such file whose writer, on this host, is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from alexbench.errors import UserError

__all__ = ["atomic_path", "atomic_write", "atomic_write_text", "atomic_write_json", "remove_stale_temps", "RunLock"]


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
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if not m or m["host"] != _HOST:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
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
        os.replace(tmp, target)
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


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: object) -> object:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _pid_alive(pid: int) -> bool:
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
    """One writer per output folder. The lock file records the owner's PID.

    A lock left by a dead process is stale: it is taken over (and said so).
    A lock held by a live process makes the second writer refuse with a clear error.
    """

    def __init__(self, directory: str | os.PathLike, name: str = ".alexbench.lock") -> None:
        self.path = Path(directory) / name
        self.took_over_from: int | None = None
        self._held = False

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read_owner()
                if owner is not None and owner != os.getpid() and _pid_alive(owner):
                    raise UserError(f"{self.path.parent}: another alexbench process (PID {owner}) is writing here; "
                                    f"wait for it or remove {self.path} if you are sure it is gone")
                # stale (dead owner or unreadable): take it over
                self.took_over_from = owner
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return self
        raise UserError(f"{self.path}: could not take the lock")

    def _read_owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        if self._held and self._read_owner() == os.getpid():
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
