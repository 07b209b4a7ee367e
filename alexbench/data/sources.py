"""Data sources: official CIFAR-10 (binary or python version), image folders, and the
embedded sample. Every source ends as one :class:`~alexbench.data.dataset.Dataset`
(uint8 NHWC arrays, int64 labels, class names).

Formats (``source`` may be a directory or a tar archive for each):

- ``cifar-binary``: ``cifar-10-batches-bin/`` or ``cifar-10-binary.tar.gz`` with
  ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin`` and
  ``batches.meta.txt``. Each record is 1 label byte then 3072 pixel bytes, channel-major
  (32x32 R, then G, then B). No pickle involved.
- ``cifar-python``: ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz`` (torchvision
  and Keras keep this one) with ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
  ``batches.meta``, read through :mod:`alexbench.data.safe_pickle`, never ``pickle.load``.
- ``image-folder``: ``train/<class>/*`` and ``test/<class>/*``, optionally under one
  top-level folder (``cifar10-jpeg/train/...``). Class order: CIFAR-10's when the class
  set is exactly CIFAR-10's, else sorted names. Files without an image extension (and
  hidden files) are skipped and counted in a warning. Grayscale/palette/RGBA images are
  converted to RGB. Mixed sizes are an error unless ``resize`` is given, in which case
  each image is resized once with PIL while loading (then cached): a one-off decode
  step, not the training path, where resizing happens on whole batches.
- ``embedded-sample``: the small real sample shipped in the package (see
  ``make_sample.py``), used only when nothing else is found, and flagged everywhere.

Whatever the format, the decoded arrays are cached by content hash (see
:mod:`alexbench.data.cache`), so a second load of the same source is a file read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.atomic import atomic_path
from alexbench.data import cache
from alexbench.data.archive import decode_image, is_image_name, is_tar, iter_tar
from alexbench.data.dataset import Dataset
from alexbench.errors import UserError
from alexbench.log import get_logger, progress_enabled

__all__ = ["CIFAR10_CLASSES", "BINARY_URL", "BINARY_MD5", "BINARY_SIZE", "PYTHON_URL", "PYTHON_MD5",
           "PYTHON_SIZE", "SAMPLE_PATH", "SAMPLE_NAME", "EMBEDDED", "LoadInfo", "official_md5", "load_dataset",
           "load_dataset_info", "find_default_source", "describe_source", "download_cifar10", "candidate_paths"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Official archives (https://www.cs.toronto.edu/~kriz/cifar.html).
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
BINARY_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
BINARY_SIZE = 170_052_171
PYTHON_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"
PYTHON_SIZE = 170_498_071
# File names under which the official archives are known (Keras saves the python one as
# cifar-10-batches-py.tar.gz), and which constant holds each one's MD5.
_OFFICIAL_NAMES = {"cifar-10-binary.tar.gz": "BINARY_MD5", "cifar-10-python.tar.gz": "PYTHON_MD5",
                   "cifar-10-batches-py.tar.gz": "PYTHON_MD5"}


def official_md5(name: str) -> str | None:
    """The published MD5 for an official archive file name, else None."""
    const = _OFFICIAL_NAMES.get(name)
    return globals()[const] if const else None


SAMPLE_PATH = Path(__file__).resolve().parent / "sample" / "cifar10-sample.tar.gz"
SAMPLE_NAME = "CIFAR-10 sample (embedded)"
EMBEDDED = "embedded"  # the ``source`` keyword that asks for the sample explicitly

_BIN_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
_BIN_FILES = [*_BIN_TRAIN, "test_batch.bin", "batches.meta.txt"]
_PY_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_PY_FILES = [*_PY_TRAIN, "test_batch", "batches.meta"]
_RECORD = 1 + 3 * 32 * 32
log = get_logger(__name__)


# --------------------------------------------------------------------------- locate

def candidate_paths(cache_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where auto-detection looks, in order: the data home, torchvision's ``./data``, Keras's cache."""
    home = cache.data_home(cache_dir)
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"
    torch_data = Path.cwd() / "data"
    return [
        home / "cifar-10-batches-bin", home / "cifar-10-binary.tar.gz",
        home / "cifar-10-batches-py", home / "cifar-10-python.tar.gz",
        torch_data / "cifar-10-batches-py", torch_data / "cifar-10-python.tar.gz",
        keras_home / "cifar-10-batches-py", keras_home / "cifar-10-batches-py.tar.gz",
        keras_home / "cifar-10-python.tar.gz",
    ]


def find_default_source(cache_dir: str | os.PathLike | None = None) -> str | None:
    """The first official CIFAR-10 copy found by :func:`candidate_paths`, or None.

    A directory counts when it holds at least one batch file (an empty folder left by
    an aborted download does not); an archive counts when it is a non-empty file.
    """
    for path in candidate_paths(cache_dir):
        if path.is_dir():
            try:
                names = set(os.listdir(path))
            except OSError:
                continue  # unreadable: not something we can use
            if names & (set(_BIN_FILES) | set(_PY_FILES)):
                return str(path)
        elif path.is_file() and path.stat().st_size > 0:
            return str(path)
    return None


def _resolve_source(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise UserError(f"{source}: broken symbolic link")
        raise UserError(f"{source}: no such file or directory")
    if path.is_dir():
        # ``./data`` or the data home itself: step into the official folder it holds.
        for sub in ("cifar-10-batches-bin", "cifar-10-batches-py"):
            if not _dir_format_hint(path) and (path / sub).is_dir():
                return (path / sub).resolve()
        return path.resolve()
    if not path.is_file():
        raise UserError(f"{source}: not a regular file or directory")
    if not is_tar(path):
        raise UserError(f"{source}: not a directory or tar archive (expected an official CIFAR-10 folder or "
                        f"archive, or an image folder)")
    return path.resolve()


def _dir_format_hint(path: Path) -> str | None:
    names = set(os.listdir(path))
    if names & set(_BIN_FILES):
        return "cifar-binary"
    if names & set(_PY_FILES):
        return "cifar-python"
    return None


def _format_from_names(names: Iterable[str]) -> str | None:
    """Decide an archive's format from member names seen so far (None: undecided)."""
    for name in names:
        parts = name.split("/")
        if parts[-1] in _BIN_FILES:
            return "cifar-binary"
        if parts[-1] in _PY_FILES:
            return "cifar-python"
        if ("train" in parts[:-1] or "test" in parts[:-1]) and is_image_name(name):
            return "image-folder"
    return None


def _peek_tar_format(path: Path) -> str | None:
    """Stream an archive's member names only until one decides the format."""
    for entry in iter_tar(path, want=lambda _: False):
        fmt = _format_from_names([entry.name])
        if fmt:
            return fmt
    return None


def describe_source(source: str | None) -> dict[str, Any]:
    """What a source is, without decoding it: path, format, container and size.

    ``source=None`` describes what :func:`load_dataset` would pick without downloading
    (an official copy found by auto-detection, else the embedded sample).
    """
    found_by = "argument"
    if source is None:
        source = find_default_source()
        found_by = "auto-detected" if source else "fallback"
    if source is None or source == EMBEDDED and not Path(EMBEDDED).exists():
        return {"source": str(SAMPLE_PATH), "format": "embedded-sample", "container": "tar.gz",
                "bytes": SAMPLE_PATH.stat().st_size if SAMPLE_PATH.exists() else None,
                "found_by": found_by, "embedded": True}
    path = _resolve_source(source)
    if path.is_dir():
        fmt = _dir_format_hint(path) or "image-folder"
        size = sum(p.stat().st_size for _, p in cache.walk_files(path))
        container = "directory"
    else:
        fmt = _peek_tar_format(path) or "unknown"
        size = path.stat().st_size
        lower = path.name.lower()
        container = next((c for c, ends in (("tar.gz", (".gz", ".tgz")), ("tar.bz2", (".bz2", ".tbz2")),
                                             ("tar.xz", (".xz", ".txz"))) if lower.endswith(ends)), "tar")
    out = {"source": str(path), "format": fmt, "container": container, "bytes": size, "found_by": found_by,
           "embedded": False}
    if path.is_file() and official_md5(path.name):
        out["official_md5"] = official_md5(path.name)
    return out


# --------------------------------------------------------------------------- download

def _want_progress() -> bool:
    return progress_enabled()


class _Progress:
    """A rich progress bar on a terminal (not under CI); silent otherwise."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self._bar, self._task = label, total, None, None
        if _want_progress():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

                self._bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                                     console=Console(stderr=True))
                self._bar.start()
                self._task = self._bar.add_task(label, total=total)
            except ImportError:  # pragma: no cover - rich is a dependency
                self._bar = None

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def download_cifar10(cache_dir: str | os.PathLike | None = None, *, url: str | None = None,
                     md5: str | None = None, size: int | None = None,
                     opener: Callable[..., Any] | None = None) -> Path:
    """Download the official binary CIFAR-10 archive into the data home; return its path.

    The file is streamed into a temporary file next to the target while its MD5 is
    computed, then renamed into place (atomic). On an MD5 mismatch the download is kept
    as ``<name>.bad-<md5>`` beside the target and a :class:`UserError` says where.
    An existing target with the right MD5 is reused. ``url``/``md5``/``size`` default to
    the module's ``BINARY_*`` constants; ``opener`` defaults to ``urllib.request.urlopen``.
    """
    url = url or BINARY_URL
    md5 = md5 or BINARY_MD5
    size = size if size is not None else (BINARY_SIZE if url == BINARY_URL else None)
    opener = opener or urllib.request.urlopen
    home = cache.data_home(cache_dir)
    target = home / "cifar-10-binary.tar.gz"
    if target.is_file() and cache.hash_file(target, ("md5",))["md5"] == md5:
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{home}: cannot create the data folder ({exc.strerror or exc})") from exc
    # progress lines on a terminal; in logs (CI, redirected) only with --verbose
    level = logging.INFO if _want_progress() else logging.DEBUG
    log.log(level, "downloading %s to %s", url, target)
    with atomic_path(target) as tmp:
        digest = hashlib.md5()
        received = 0
        try:
            response = opener(url, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise UserError(f"{url}: download failed ({getattr(exc, 'reason', None) or exc})") from None
        with response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            bar = _Progress(target.name, int(length) if length else size)
            try:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except OSError as exc:  # network trouble is not a disk error: say so
                        raise UserError(f"{url}: download interrupted after {received:,} bytes ({exc})") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != md5:
            bad = target.with_name(f"{target.name}.bad-{got}")
            os.replace(tmp, bad)
            expected = f"{size:,} bytes, " if size else ""
            raise UserError(f"{url}: MD5 mismatch: got {got} ({received:,} bytes), expected {md5} ({expected}"
                            f"official); the downloaded file was kept at {bad}")
    log.log(level, "downloaded %s bytes, MD5 verified: %s", f"{received:,}", target)
    return target


# --------------------------------------------------------------------------- readers

@dataclass
class _Decoded:
    name: str
    format: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    notes: list[str] = field(default_factory=list)


def _collect(path: Path, wanted: list[str]) -> dict[str, tuple[str, Callable[[], bytes]]]:
    """Find the official batch files in a directory or archive: basename -> (shown name, reader)."""
    found: dict[str, tuple[str, Callable[[], bytes]]] = {}
    if path.is_dir():
        for name in wanted:
            if (path / name).is_file():
                found[name] = (str(path / name), (lambda p=path / name: _read_file(p)))
    else:
        for entry in iter_tar(path, want=lambda n: n.rsplit("/", 1)[-1] in wanted):
            base = entry.name.rsplit("/", 1)[-1]
            if entry.data is not None:
                if base in found:
                    raise UserError(f"{path}: more than one {base} in the archive")
                found[base] = (f"{path}:{entry.name}", (lambda d=entry.data: d))
    missing = [n for n in wanted if n not in found]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}")
    return found


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _check_labels(labels: np.ndarray, n_classes: int, shown: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= n_classes))[0])
        raise UserError(f"{shown}: record {bad} has label {int(labels[bad])}, but there are only "
                        f"{n_classes} classes")


def _read_cifar_binary(path: Path) -> _Decoded:
    files = _collect(path, _BIN_FILES)
    shown, read = files["batches.meta.txt"]
    try:
        classes = [line.strip() for line in read().decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise UserError(f"{shown}: not a text file of class names ({exc})") from exc
    if not classes:
        raise UserError(f"{shown}: no class names")

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        shown, read = files[name]
        raw = read()
        if not raw or len(raw) % _RECORD:
            raise UserError(f"{shown}: truncated or corrupt batch ({len(raw):,} bytes is not a whole number of "
                            f"{_RECORD}-byte records)")
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
        labels = rec[:, 0].astype(np.int64)
        _check_labels(labels, len(classes), shown)
        # (N, C, H, W) channel-major in the file -> (N, H, W, C)
        images = np.ascontiguousarray(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return images, labels

    train = [batch(n) for n in _BIN_TRAIN]
    x_test, y_test = batch("test_batch.bin")
    return _Decoded("CIFAR-10", "cifar-binary", classes, np.concatenate([t[0] for t in train]),
                    np.concatenate([t[1] for t in train]), x_test, y_test)


def _unpickle(shown: str, raw: bytes) -> Any:
    from alexbench.data.safe_pickle import UnsafePickleError, safe_loads

    try:
        return safe_loads(raw)
    except UnsafePickleError as exc:
        raise UserError(f"{shown}: refused python batch: {exc}; nothing in it was executed") from exc
    except Exception as exc:  # truncated/corrupt streams raise many types; none is trusted
        raise UserError(f"{shown}: truncated or corrupt python batch ({type(exc).__name__}: {exc})") from exc


def _key(d: dict, name: str, shown: str) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise UserError(f"{shown}: no {name!r} entry (not a CIFAR-10 python batch)")


def _read_cifar_python(path: Path) -> _Decoded:
    files = _collect(path, _PY_FILES)
    shown, read = files["batches.meta"]
    meta = _unpickle(shown, read())
    if not isinstance(meta, dict):
        raise UserError(f"{shown}: expected a dict, got {type(meta).__name__}")
    names = _key(meta, "label_names", shown)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"{shown}: 'label_names' must be a non-empty list of names")
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        shown, read = files[name]
        d = _unpickle(shown, read())
        if not isinstance(d, dict):
            raise UserError(f"{shown}: expected a dict, got {type(d).__name__}")
        data, labels = _key(d, "data", shown), _key(d, "labels", shown)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise UserError(f"{shown}: 'data' is {desc}, expected a uint8 array of shape (N, 3072)")
        try:
            y = np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{shown}: 'labels' is not a list of integers") from exc
        if y.shape != (len(data),):
            raise UserError(f"{shown}: {y.size} labels for {len(data)} images")
        _check_labels(y, len(classes), shown)
        return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), y

    train = [batch(n) for n in _PY_TRAIN]
    x_test, y_test = batch("test_batch")
    return _Decoded("CIFAR-10", "cifar-python", classes, np.concatenate([t[0] for t in train]),
                    np.concatenate([t[1] for t in train]), x_test, y_test)


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _image_folder_entries(path: Path) -> tuple[list[tuple[str, Callable[[], bytes]]], set[str]]:
    """(relative name, reader) of every file, and the set of directory names, in a dir or archive."""
    files: list[tuple[str, Callable[[], bytes]]] = []
    dirs: set[str] = set()
    if path.is_dir():
        for rel, p in cache.walk_files(path, dirs):
            files.append((rel, (lambda p=p: _read_file(p))))
    else:
        for entry in iter_tar(path, want=is_image_name):
            if entry.is_dir:
                dirs.add(entry.name)
            else:
                files.append((entry.name, (lambda d=entry.data: d or b"")))
                parts = entry.name.split("/")
                dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return files, dirs


def _read_image_folder(path: Path, resize: int | None) -> _Decoded:
    files, dirs = _image_folder_entries(path)
    tops = {n.split("/")[0] for n in dirs | {f for f, _ in files}} - {"__MACOSX"}
    tops = {t for t in tops if not t.startswith(".")}
    if "train" in dirs or "test" in dirs:
        root = ""
    elif len(tops) == 1 and ({f"{t}/train" for t in tops} | {f"{t}/test" for t in tops}) & dirs:
        root = f"{next(iter(tops))}/"
    else:
        raise UserError(f"{path}: no train/ and test/ folders found (expected train/<class>/* and "
                        f"test/<class>/*, optionally under one top-level folder)")
    for split in ("train", "test"):
        if f"{root}{split}" not in dirs:
            raise UserError(f"{path}: no {root}{split}/ folder (expected train/<class>/* and test/<class>/*)")

    def classes_of(split: str) -> set[str]:
        prefix = f"{root}{split}/"
        return {d[len(prefix):] for d in dirs if d.startswith(prefix) and "/" not in d[len(prefix):]
                and not d[len(prefix):].startswith(".")}

    train_classes, test_classes = classes_of("train"), classes_of("test")
    if not train_classes:
        raise UserError(f"{path}: {root}train/ has no class folders")
    if train_classes != test_classes:
        only_train = sorted(train_classes - test_classes)
        only_test = sorted(test_classes - train_classes)
        if not only_test:
            raise UserError(f"{path}: class folder{'s' if len(only_train) > 1 else ''} missing from "
                            f"{root}test/: {', '.join(only_train)}")
        sides = [f"only in {root}train/: {', '.join(only_train)}"] if only_train else []
        sides.append(f"only in {root}test/: {', '.join(only_test)}")
        raise UserError(f"{path}: train and test have different class sets ({'; '.join(sides)})")
    classes = CIFAR10_CLASSES[:] if train_classes == set(CIFAR10_CLASSES) else sorted(train_classes)
    index = {c: i for i, c in enumerate(classes)}

    members: dict[str, list[tuple[str, str, Callable[[], bytes]]]] = {"train": [], "test": []}
    skipped: list[str] = []
    for name, read in files:
        rel = name[len(root):] if name.startswith(root) else None
        parts = rel.split("/") if rel is not None else []
        if len(parts) == 3 and parts[0] in members and parts[1] in index and is_image_name(name):
            members[parts[0]].append((parts[1], parts[2], read))
        elif not any(p.startswith(".") for p in name.split("/")[:-1]):
            skipped.append(name)  # files inside hidden folders are not even worth a mention
    for split, items in members.items():
        present = {c for c, _, _ in items}
        for c in classes:
            if c not in present:
                raise UserError(f"{path}: {root}{split}/{c}/ is empty (no image files)")
        items.sort(key=lambda t: (index[t[0]], _natural_key(t[1])))

    notes: list[str] = []
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        msg = f"{path}: skipped {len(skipped)} non-image file{'s' if len(skipped) > 1 else ''} ({shown})"
        cache.warn(msg)
        notes.append(msg)

    formats: set[str] = set()
    first: tuple[str, tuple[int, ...]] | None = None
    resized = 0
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, items in members.items():
        x: np.ndarray | None = None
        y = np.empty(len(items), dtype=np.int64)
        for i, (cls, fname, read) in enumerate(items):
            shown = f"{path}:{root}{split}/{cls}/{fname}" if path.is_file() else str(path / root / split / cls / fname)
            data = read()
            img, fmt = decode_image(data, shown, resize=resize)
            formats.add(fmt)
            if first is None:
                first = (shown, img.shape)
            if x is None:
                x = np.empty((len(items), *first[1]), dtype=np.uint8)
            if img.shape != x.shape[1:]:
                h0, w0 = first[1][:2]
                raise UserError(f"{shown}: image is {img.shape[1]}x{img.shape[0]}, but {first[0]} is {w0}x{h0}; "
                                f"mixed image sizes need an explicit resize (load_dataset(..., resize=N))")
            x[i] = img
            y[i] = index[cls]
        out[split] = (x if x is not None else np.empty((0, 32, 32, 3), np.uint8), y)
        if resize is not None:
            resized += len(items)
    if resize is not None:
        notes.append(f"images resized to {resize}x{resize} with PIL bilinear while loading (cached once)")

    if set(classes) == set(CIFAR10_CLASSES):
        name = "CIFAR-10 (JPEG copy)" if formats == {"JPEG"} else "CIFAR-10 (image folder)"
        if formats == {"JPEG"}:
            notes.append("JPEG copy of CIFAR-10: lossy, so accuracy on it is close to but not the same as "
                         "on official CIFAR-10")
    else:
        stem = path.name
        for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        name = f"{stem} (image folder)"
    return _Decoded(name, "image-folder", classes, *out["train"], *out["test"], notes=notes)


def _decode(path: Path, resize: int | None) -> _Decoded:
    if path.is_dir():
        fmt = _dir_format_hint(path) or "image-folder"
    else:
        fmt = _peek_tar_format(path)
        if fmt is None:
            raise UserError(f"{path}: archive holds neither official CIFAR-10 batches nor train/<class>/ and "
                            f"test/<class>/ images")
    if fmt in ("cifar-binary", "cifar-python") and resize not in (None, 32):
        raise UserError(f"{path}: resize={resize} is not done at load time for official CIFAR-10 (32x32); "
                        f"models resize whole batches")
    if fmt == "cifar-binary":
        return _read_cifar_binary(path)
    if fmt == "cifar-python":
        return _read_cifar_python(path)
    return _read_image_folder(path, resize)


# --------------------------------------------------------------------------- load

@dataclass
class LoadInfo:
    """How a load went; :func:`load_dataset_info` returns it for ``alexbench data``."""

    dataset: Dataset
    cache_hit: bool
    seconds: float
    found_by: str  # "argument" | "auto-detected" | "downloaded" | "fallback"
    verify: dict[str, Any] = field(default_factory=dict)


def load_dataset(source: str | None = None, *, verify: bool = False, resize: int | None = None,
                 download: bool = False, cache_dir: str | None = None) -> Dataset:
    """Load CIFAR-10 (or an image folder) as uint8 NHWC arrays, decoding at most once per source.

    Args:
        source: a directory or tar archive in one of the formats of this module, or
            ``"embedded"`` for the shipped sample. None: auto-detect an official copy
            (:func:`candidate_paths`); if none, download it when ``download`` is true,
            else fall back to the embedded sample (with a warning, and
            ``Dataset.embedded=True``).
        verify: recompute the source's hash (ignoring sidecars), decode every image
            again instead of reading the cache, and refresh the cache if it differed.
        resize: image folders only: resize every image to ``resize x resize`` while
            loading (needed for folders of mixed sizes).
        download: see ``source``.
        cache_dir: the data home; default ``$ALEXBENCH_DATA`` or ``~/.cache/alexbench``.

    Raises:
        UserError: for any bad input, naming the file and the problem.
    """
    return load_dataset_info(source, verify=verify, resize=resize, download=download,
                             cache_dir=cache_dir).dataset


def load_dataset_info(source: str | None = None, *, verify: bool = False, resize: int | None = None,
                      download: bool = False, cache_dir: str | None = None) -> LoadInfo:
    """:func:`load_dataset`, also telling whether the cache served it and how long it took."""
    t0 = time.perf_counter()
    if resize is not None and (not isinstance(resize, int) or not 1 <= resize <= 4096):
        raise UserError(f"resize: must be an integer in [1, 4096] (got {resize!r})")
    home = cache.data_home(cache_dir)
    found_by = "argument"
    if source is None:
        source = find_default_source(home)
        found_by = "auto-detected"
        if source is None and download:
            source = str(download_cifar10(home))
            found_by = "downloaded"
        elif source is None:
            found_by = "fallback"
    embedded = source is None or (source == EMBEDDED and not Path(EMBEDDED).exists())
    if embedded:
        if not SAMPLE_PATH.is_file():
            raise UserError(f"{SAMPLE_PATH}: the embedded sample is missing from this installation")
        path = SAMPLE_PATH
    else:
        path = _resolve_source(str(source))

    expected_md5 = official_md5(path.name) if path.is_file() else None
    digests = cache.source_sha256(path, home, fresh=verify, md5=expected_md5 is not None)
    sha = digests["sha256"]
    report: dict[str, Any] = {}
    md5_note = None
    if verify:
        report["sha256_recomputed"] = sha
        if expected_md5:
            report["md5"] = digests["md5"]
            report["md5_official"] = digests["md5"] == expected_md5
    if expected_md5 and digests.get("md5") != expected_md5:
        md5_note = _md5_mismatch(path, home, digests["md5"], expected_md5)
    if embedded:
        _check_sample_sha(sha, verify, report)

    cpath = cache.cache_file(home, sha, resize)
    cached = cache.load_cached(cpath)
    if cached is not None and not verify:
        meta = cached["meta"]
        ds = Dataset(name=meta["name"], source=str(path), format=meta["format"], sha256=sha,
                     classes=cached["classes"], x_train=cached["x_train"], y_train=cached["y_train"],
                     x_test=cached["x_test"], y_test=cached["y_test"], embedded=embedded,
                     cache_path=str(cpath), notes=list(meta.get("notes", [])))
        if md5_note and md5_note not in ds.notes:
            ds.notes.append(md5_note)
        _finish_notes(ds, found_by, home)
        return LoadInfo(ds, True, time.perf_counter() - t0, found_by, report)

    dec = _decode(path, resize)
    if md5_note:
        dec.notes.append(md5_note)
    if embedded:
        dec.name, dec.format = SAMPLE_NAME, "embedded-sample"
        n_tr, n_te = len(dec.y_train), len(dec.y_test)
        dec.notes.insert(0, f"embedded sample: a small real subset of CIFAR-10 ({n_tr:,} train / {n_te:,} test "
                            f"JPEG images, {n_tr // max(len(dec.classes), 1)} and {n_te // max(len(dec.classes), 1)} "
                            f"per class); results on it are not CIFAR-10 results")
    arrays = {"x_train": dec.x_train, "y_train": dec.y_train, "x_test": dec.x_test, "y_test": dec.y_test,
              "classes": dec.classes}
    if verify:
        report["images_decoded"] = len(dec.y_train) + len(dec.y_test)
        if cached is not None:
            same = all(np.array_equal(cached[k], arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test")) \
                and cached["classes"] == dec.classes
            report["cache_matched"] = same
    if cached is None or not report.get("cache_matched", False):
        written = cache.save_cached(cpath, arrays, {"name": dec.name, "format": dec.format, "notes": dec.notes,
                                                    "source": str(path), "sha256": sha})
        if verify and cached is not None:
            report["cache_rewritten"] = written
    ds = Dataset(name=dec.name, source=str(path), format=dec.format, sha256=sha, classes=dec.classes,
                 x_train=dec.x_train, y_train=dec.y_train, x_test=dec.x_test, y_test=dec.y_test,
                 embedded=embedded, cache_path=str(cpath) if cpath.is_file() else None, notes=dec.notes)
    _finish_notes(ds, found_by, home)
    return LoadInfo(ds, False, time.perf_counter() - t0, found_by, report)


def _finish_notes(ds: Dataset, found_by: str, home: Path) -> None:
    if found_by == "fallback":
        msg = (f"no CIFAR-10 copy found (looked in {home}, ./data and ~/.keras/datasets); using the small "
               f"embedded sample. Run `alexbench data --download` or pass a source for the full dataset")
        cache.warn(msg)
        ds.notes.append(msg)
    elif found_by == "downloaded":
        ds.notes.append(f"downloaded from {BINARY_URL} (MD5 verified)")


def _md5_mismatch(path: Path, home: Path, got: str, expected: str) -> str:
    """An official archive name whose MD5 is wrong.

    In the data home it is our own download gone bad: set it aside as ``.bad-<md5>``
    (never deleted) and stop. Elsewhere it is the user's file: warn, then read it anyway
    (a truncated copy fails to read with its own clear error).
    """
    if path.parent.resolve() == home.resolve():
        bad = path.with_name(f"{path.name}.bad-{got}")
        os.replace(path, bad)
        raise UserError(f"{path}: MD5 mismatch (got {got}, expected {expected}); the file was kept aside at {bad}")
    msg = (f"{path}: MD5 {got} is not the official {path.name}'s ({expected}); reading it anyway, "
           f"results may not be official CIFAR-10")
    cache.warn(msg)
    return msg


def _check_sample_sha(sha: str, verify: bool, report: dict[str, Any]) -> None:
    expected_file = SAMPLE_PATH.with_suffix("").with_suffix(".sha256")
    try:
        expected = expected_file.read_text().split()[0]
    except (OSError, IndexError):
        return
    if verify:
        report["sample_sha256_matches"] = expected == sha
    if expected != sha:
        raise UserError(f"{SAMPLE_PATH}: sha256 {sha} does not match {expected_file.name} ({expected}); "
                        f"the installed sample is damaged")
