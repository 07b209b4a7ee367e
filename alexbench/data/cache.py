"""Where alexbench keeps data, content hashes of sources, and the decoded-array cache.

Layout under the data home (``$ALEXBENCH_DATA``, default ``~/.cache/alexbench``)::

    cifar-10-binary.tar.gz          official download (see download.download_cifar10)
    decoded/<sha256>.npz            decoded uint8 arrays of one source
    decoded/<sha256>-resize<N>.npz  ... of one source loaded with resize=N
    decoded/hashes/<key>.json       sidecar: a source's sha256, keyed by its path

**Content hash.** For a file (archive), the sha256 of its bytes. For a directory, the
sha256 of one line per regular file, in sorted order of relative POSIX path:
``<relative path> NUL <size> NUL <sha256 of the file's bytes> LF``. So it depends on
names and contents, not on mtimes. Symbolic links to files and folders are followed
(each folder visited once).

**Sidecar.** Hashing is skipped when the sidecar for the same absolute path still
matches: for a file, its size and mtime (ns); for a directory, a fingerprint over
every file's relative path, size and mtime. ``verify=True`` ignores sidecars.

**Decoded cache.** ``np.savez`` (no pickle: classes and metadata are stored as unicode
arrays) written through :func:`alexbench.atomic.atomic_path`, so a crash or a full disk
leaves the previous file or none, never half of one; it is read with
``allow_pickle=False``, its arrays memory-mapped (they are stored uncompressed), so a
load costs no memory in proportion to the data set. A cache file is only ever replaced,
never rewritten in place; truncating one in place while a process maps it would make
that process fail (SIGBUS), so delete it instead. Decoding an image folder writes into
scratch files (:func:`scratch`) that :func:`save_cached` streams into the cache, so neither
step holds the decoded images in memory. A corrupt or stale cache file is ignored with a warning and
rebuilt. Failing to write the cache is a warning, never an error: the data is fine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.atomic import atomic_path, atomic_write_json, pid_alive, strict_json
from alexbench.errors import UserError
from alexbench.log import get_logger

__all__ = ["CACHE_VERSION", "data_home", "decoded_dir", "warn", "hash_file", "walk_files", "source_sha256",
           "cache_file", "load_cached", "save_cached", "scratch", "ScratchArray", "write_npz"]

CACHE_VERSION = 1  # bump when the decoded content for the same source would change
_CHUNK = 1 << 20
log = get_logger(__name__)


def warn(message: str) -> None:
    """The data layer's one way to warn (``warning: ...`` on stderr through :mod:`alexbench.log`)."""
    log.warning("%s", message)


def data_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$ALEXBENCH_DATA``, else ``~/.cache/alexbench``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ALEXBENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alexbench"


def decoded_dir(home: Path) -> Path:
    return home / "decoded"


def hash_file(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file's bytes, all computed in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                for h in hashers.values():
                    h.update(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return {name: h.hexdigest() for name, h in hashers.items()}


def walk_files(root: Path, dirs: set[str] | None = None) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file under ``root``, sorted; links followed once.

    If ``dirs`` is given, the relative path of every folder seen is added to it.
    """
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise UserError(f"{folder}: cannot list ({exc.strerror or exc})") from exc
        for entry in entries:
            name = f"{rel}{entry.name}"
            try:
                if entry.is_dir():
                    if dirs is not None:
                        dirs.add(name)
                    stack.append((Path(entry.path), name + "/"))
                elif entry.is_file():
                    out.append((name, Path(entry.path)))
            except OSError:
                continue  # dangling link and the like: not data
    out.sort()
    return out


def _sidecar_path(home: Path, source: Path) -> Path:
    key = hashlib.sha256(str(source).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return decoded_dir(home) / "hashes" / f"{key}.json"


def _dir_fingerprint(files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for rel, path in files:
        st = path.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _dir_sha256(files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for rel, path in files:
        digest = hash_file(path)["sha256"]
        h.update(f"{rel}\0{path.stat().st_size}\0{digest}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def source_sha256(source: Path, home: Path, *, fresh: bool = False, md5: bool = False) -> dict[str, str]:
    """Content hash of a source file or directory: ``{"sha256": ..., ["md5": ...]}``.

    Served from the sidecar when the path's size/mtime (or directory fingerprint) is
    unchanged, unless ``fresh``. ``md5`` (files only) is also computed and remembered
    when asked for: official CIFAR-10 archives are published with an MD5.
    """
    source = source.resolve()
    sidecar = _sidecar_path(home, source)
    if source.is_dir():
        files = walk_files(source)
        key: dict[str, Any] = {"path": str(source), "fingerprint": _dir_fingerprint(files)}
    else:
        st = source.stat()
        files = []
        key = {"path": str(source), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if not fresh:
        try:
            saved = json.loads(sidecar.read_text())
            if all(saved.get(k) == v for k, v in key.items()) and (not md5 or "md5" in saved):
                return {k: saved[k] for k in ("sha256", "md5") if k in saved}
        except (OSError, ValueError, AttributeError):
            pass  # no sidecar, or an unreadable one: just hash
    if source.is_dir():
        digests = {"sha256": _dir_sha256(files)}
    else:
        digests = hash_file(source, ("sha256", "md5") if md5 else ("sha256",))
    try:
        atomic_write_json(sidecar, {**key, **digests})
    except (UserError, OSError):
        pass  # the sidecar only saves time; an unwritable cache folder is reported by save_cached
    return digests


def cache_file(home: Path, sha256: str, resize: int | None = None) -> Path:
    suffix = f"-resize{resize}" if resize else ""
    return decoded_dir(home) / f"{sha256}{suffix}.npz"


_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _stored_array(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """A copy-on-write memory map of member ``name``.npy when it is stored uncompressed (as
    :func:`save_cached` writes it), else None. Nothing is read but the headers."""
    try:
        info = zf.getinfo(f"{name}.npy")
    except KeyError:
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            return None
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject or offset - start + int(np.prod(shape)) * dtype.itemsize > info.file_size:
        return None
    if int(np.prod(shape)) == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape, order="F" if fortran else "C")


def load_cached(path: Path) -> dict[str, Any] | None:
    """The arrays and metadata saved by :func:`save_cached`, or None if absent or unusable.

    The image and label arrays are memory-mapped from the file, so loading costs no memory
    in proportion to the data set (pages are read as they are used). A file that exists but
    cannot be used (truncated, corrupt, other version) gives a warning and None, so the
    caller rebuilds it.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz, zipfile.ZipFile(path) as zf:
            out: dict[str, Any] = {}
            for k in _ARRAYS:
                mapped = _stored_array(path, zf, k)
                out[k] = mapped if mapped is not None else npz[k]
            out["classes"] = [str(c) for c in npz["classes"]]
            meta = json.loads(str(npz["meta"]))
        if meta.get("version") != CACHE_VERSION:
            warn(f"{path}: decoded cache from another alexbench version; rebuilding it")
            return None
        _check_arrays(out, path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UserError) as exc:
        warn(f"{path}: ignoring unusable decoded cache ({exc}); rebuilding it")
        return None
    out["meta"] = meta
    return out


def _check_arrays(out: dict[str, Any], path: Path) -> None:
    n_classes = len(out["classes"])
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] != 3:
            raise UserError(f"x_{split} is {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != (x.shape[0],):
            raise UserError(f"y_{split} is {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise UserError(f"y_{split} out of range")


class ScratchArray:
    """A uint8 ``.npy`` file filled one image at a time with ``os.pwrite``, never memory-mapped,
    so filling it costs no memory however large it is. ``a[i] = img`` writes image ``i``."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.path, self.shape, self.dtype = path, tuple(int(v) for v in shape), np.dtype(np.uint8)
        header = io.BytesIO()
        np.lib.format.write_array_header_2_0(header, {"descr": "|u1", "fortran_order": False, "shape": self.shape})
        self._row = int(np.prod(self.shape[1:], dtype=np.int64))
        self._offset = len(header.getvalue())
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(self._fd, header.getvalue())
        os.ftruncate(self._fd, self._offset + self.shape[0] * self._row)

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, i: int, img: np.ndarray) -> None:
        data = np.ascontiguousarray(img, dtype=np.uint8)
        if data.size != self._row:
            raise ValueError(f"image {i}: {data.shape} does not fit {self.shape[1:]}")
        os.pwrite(self._fd, data.tobytes(), self._offset + i * self._row)

    def chunks(self, size: int = _CHUNK) -> Iterator[bytes]:
        """The file's bytes, header included, ``size`` at a time."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        while chunk := os.read(self._fd, size):
            yield chunk

    def load(self) -> np.ndarray:
        """The whole array in memory (only when no cache file could be written)."""
        return np.load(self.path)

    def close(self) -> None:
        os.close(self._fd)


@contextlib.contextmanager
def scratch(home: Path) -> Iterator[Callable[[str, tuple[int, ...]], ScratchArray] | None]:
    """An allocator of :class:`ScratchArray` files in a private folder of the decoded cache, removed
    afterwards (and, if a killed process left one, at the next call): a reader decodes into them
    and :func:`save_cached` streams them into the cache, so memory does not grow with the data.
    Yields None when the folder cannot be made (the arrays then stay in memory)."""
    base = decoded_dir(home)
    try:
        base.mkdir(parents=True, exist_ok=True)
        for old in base.glob(".scratch-*"):
            pid = old.name.split("-")[1]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix=f".scratch-{os.getpid()}-", dir=base))
    except OSError:
        yield None
        return
    made: list[ScratchArray] = []

    def alloc(name: str, shape: tuple[int, ...]) -> ScratchArray:
        made.append(ScratchArray(folder / f"{name}.npy", shape))
        return made[-1]

    try:
        yield alloc
    finally:
        for a in made:
            a.close()
        shutil.rmtree(folder, ignore_errors=True)


def write_npz(fh: Any, arrays: dict[str, Any]) -> None:
    """What ``np.savez`` writes (stored members, zip64), but a :class:`ScratchArray` is copied
    from its file in chunks rather than read into memory."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                if isinstance(a, ScratchArray):
                    for chunk in a.chunks():
                        out.write(chunk)
                else:
                    np.lib.format.write_array(out, np.asanyarray(a), allow_pickle=False)


def save_cached(path: Path, arrays: dict[str, Any], meta: dict[str, Any]) -> bool:
    """Write the decoded cache atomically (arrays stored uncompressed, so they can be memory-mapped;
    written in bounded chunks). Returns False (with a warning) if it could not."""
    meta = {**meta, "version": CACHE_VERSION}
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                write_npz(fh, {**{k: arrays[k] for k in _ARRAYS}, "classes": np.array(arrays["classes"], dtype=str),
                               "meta": np.array(strict_json(meta, indent=None))})
    except UserError as exc:  # atomic_path turned the OSError into one line; previous file kept
        warn(f"decoded cache not written: {exc}")
        return False
    except OSError as exc:
        warn(f"decoded cache not written: {path}: {exc.strerror or exc}")
        return False
    return True
