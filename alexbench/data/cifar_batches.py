"""Readers of the two official CIFAR-10 formats, from a directory or a tar archive.

- ``cifar-binary``: ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin``
  and ``batches.meta.txt``. Each record is 1 label byte then 3072 pixel bytes,
  channel-major (32x32 R, then G, then B). No pickle involved.
- ``cifar-python``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
  ``batches.meta``, read through :mod:`alexbench.data.safe_pickle`, never ``pickle.load``.

Also the pieces every reader shares: :class:`Decoded` (what a reader returns) and
:func:`read_file`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.data.archive import iter_tar
from alexbench.errors import UserError

__all__ = ["MAX_BATCH_FILE_BYTES", "BIN_TRAIN", "BIN_FILES", "PY_TRAIN", "PY_FILES", "Decoded", "read_file",
           "read_cifar_binary", "read_cifar_python", "unpickle"]

BIN_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
BIN_FILES = [*BIN_TRAIN, "test_batch.bin", "batches.meta.txt"]
PY_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
PY_FILES = [*PY_TRAIN, "test_batch", "batches.meta"]
RECORD = 1 + 3 * 32 * 32
MAX_BATCH_FILE_BYTES = 64 << 20  # an official batch file is 30.7 MB (10,000 records)


@dataclass
class Decoded:
    """What a format reader returns: the arrays, the class names, and notes for the outputs."""

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
                found[name] = (str(path / name), partial(read_file, path / name, MAX_BATCH_FILE_BYTES))
    else:
        for entry in iter_tar(path, want=lambda n: n.rsplit("/", 1)[-1] in wanted, max_read=MAX_BATCH_FILE_BYTES):
            base = entry.name.rsplit("/", 1)[-1]
            if entry.data is not None:
                if base in found:
                    raise UserError(f"{path}: more than one {base} in the archive")
                found[base] = (f"{path}:{entry.name}", partial(bytes, entry.data))  # bytes(b) is b itself
    missing = [n for n in wanted if n not in found]
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}")
    return found


def read_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of ``path``; with ``limit``, a file larger than that is refused before it is read."""
    try:
        with open(path, "rb") as fh:
            if limit is not None and os.fstat(fh.fileno()).st_size > limit:
                raise UserError(f"{path}: {os.fstat(fh.fileno()).st_size:,} bytes is over the {limit:,}-byte limit "
                                "for this kind of file; refused")
            data = fh.read() if limit is None else fh.read(limit + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if limit is not None and len(data) > limit:  # grew while read, or not a regular file
        raise UserError(f"{path}: over the {limit:,}-byte limit for this kind of file; refused")
    return data


def _check_labels(labels: np.ndarray, n_classes: int, shown: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= n_classes))[0])
        raise UserError(f"{shown}: record {bad} has label {int(labels[bad])}, but there are only "
                        f"{n_classes} classes")


def read_cifar_binary(path: Path) -> Decoded:
    files = _collect(path, BIN_FILES)
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
        if not raw or len(raw) % RECORD:
            raise UserError(f"{shown}: truncated or corrupt batch ({len(raw):,} bytes is not a whole number of "
                            f"{RECORD}-byte records)")
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
        labels = rec[:, 0].astype(np.int64)
        _check_labels(labels, len(classes), shown)
        # (N, C, H, W) channel-major in the file -> (N, H, W, C)
        images = np.ascontiguousarray(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        return images, labels

    train = [batch(n) for n in BIN_TRAIN]
    x_test, y_test = batch("test_batch.bin")
    return Decoded("CIFAR-10", "cifar-binary", classes, np.concatenate([t[0] for t in train]),
                    np.concatenate([t[1] for t in train]), x_test, y_test)


def unpickle(shown: str, raw: bytes) -> Any:
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


def read_cifar_python(path: Path) -> Decoded:
    files = _collect(path, PY_FILES)
    shown, read = files["batches.meta"]
    meta = unpickle(shown, read())
    if not isinstance(meta, dict):
        raise UserError(f"{shown}: expected a dict, got {type(meta).__name__}")
    names = _key(meta, "label_names", shown)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"{shown}: 'label_names' must be a non-empty list of names")
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        shown, read = files[name]
        d = unpickle(shown, read())
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

    train = [batch(n) for n in PY_TRAIN]
    x_test, y_test = batch("test_batch")
    return Decoded("CIFAR-10", "cifar-python", classes, np.concatenate([t[0] for t in train]),
                    np.concatenate([t[1] for t in train]), x_test, y_test)
