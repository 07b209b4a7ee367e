"""Checks of what a run folder holds, before compare or the report use it.

A run folder is plain files that anyone can edit. A value of the wrong type or out of range
(a string where a number belongs, an infinite time, a confusion matrix of the wrong
shape, image arrays that are not images) is refused here with one line naming the file,
the field and the value, rather than failing deep inside a plot. Keys that older runs did
not write may be absent; when present they must be right.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.errors import UserError

__all__ = ["check_metrics", "check_state", "check_history", "check_predictions", "n_classes"]
_MAX_GRID = 256  # images shown in a grid
_MAX_SIDE = 1024  # pixels per side of a shown image

_UNIT = (0.0, 1.0)
_COUNTS = ("params_trainable", "params_total", "peak_rss_bytes", "best_epoch", "world_size")
_AMOUNTS = ("train_seconds", "eval_seconds", "images_per_second", "data_seconds_per_step", "data_share",
            "flops_per_image", "train_flops")
_TEXT = ("model", "framework", "entry", "status", "code_version", "backend")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(path: Path, field: str, want: str, got: Any) -> UserError:
    return UserError(f"{path}: {field}: expected {want} (got {_show(got)})")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(path: Path, field: str, v: Any, rng: tuple[float, float] | None = None, nan_ok: bool = False,
            optional: bool = True) -> None:
    if v is None and optional:
        return
    if not _is_num(v):
        raise _fail(path, field, "a number", v)
    if math.isnan(v) and nan_ok:
        return
    if not math.isfinite(v):
        raise _fail(path, field, "a finite number", v)
    lo, hi = rng if rng else (-math.inf, math.inf)
    if not lo <= v <= hi:
        raise _fail(path, field, f"a number >= {lo:g}" if hi == math.inf else f"a number in [{lo:g}, {hi:g}]", v)


def _count(path: Path, field: str, v: Any, optional: bool = True) -> None:
    if v is None and optional:
        return
    if not (_is_num(v) and math.isfinite(v) and v >= 0 and v == int(v)):
        raise _fail(path, field, "a whole number >= 0", v)


def _text(path: Path, field: str, v: Any, optional: bool = True) -> None:
    if not (isinstance(v, str) or (v is None and optional)):
        raise _fail(path, field, "text", v)


def _mapping(path: Path, field: str, v: Any, optional: bool = True) -> dict:
    if v is None and optional:
        return {}
    if not isinstance(v, dict):
        raise _fail(path, field, "a mapping", v)
    return v


def _per_class(path: Path, field: str, v: Any) -> None:
    for k, x in _mapping(path, field, v).items():
        _number(path, f"{field}.{k}", x, _UNIT)


def check_metrics(path: Path, m: dict[str, Any]) -> None:
    """Types and ranges of every metrics.json key compare and the report read."""
    for key in _TEXT:
        _text(path, key, m.get(key), optional=key not in ("model", "framework"))
    if m.get("pretrained") not in (None, False):
        _text(path, "pretrained", m.get("pretrained"))
    if m.get("seed") is not None:
        _count(path, "seed", m.get("seed"))
    for key in _COUNTS:
        _count(path, key, m.get(key))
    for key in _AMOUNTS:
        _number(path, key, m.get(key), (0.0, math.inf))
    test = _mapping(path, "test", m.get("test"), optional=False)
    _number(path, "test.accuracy", test.get("accuracy"), _UNIT, optional=False)
    for key in ("top5_accuracy", "macro_f1"):
        _number(path, f"test.{key}", test.get(key), _UNIT)
    _number(path, "test.loss", test.get("loss"), (0.0, math.inf), nan_ok=True)
    _count(path, "test.n", test.get("n"))
    ci = test.get("accuracy_ci95")
    if ci is not None:
        if not (isinstance(ci, list) and len(ci) == 2 and all(_is_num(x) and 0 <= x <= 1 for x in ci)
                and ci[0] <= ci[1]):
            raise _fail(path, "test.accuracy_ci95", "[lo, hi] with 0 <= lo <= hi <= 1", ci)
    for key in ("per_class_accuracy", "precision", "recall", "f1"):
        _per_class(path, f"test.{key}", test.get(key))
    dataset = _mapping(path, "dataset", m.get("dataset"))
    classes = dataset.get("classes")
    if classes is not None and not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise _fail(path, "dataset.classes", "a list of class names", classes)
    for key in ("name", "source", "sha256", "format"):
        _text(path, f"dataset.{key}", dataset.get(key))
    for key in ("train", "val", "test", "input_size"):
        _count(path, f"dataset.{key}", dataset.get(key))
    cm = test.get("confusion_matrix")
    if cm is not None:
        k = len(classes) if classes else (len(cm) if isinstance(cm, list) else 0)
        if not (isinstance(cm, list) and len(cm) == k and k > 0
                and all(isinstance(row, list) and len(row) == k
                        and all(_is_num(x) and x >= 0 and x == int(x) for x in row) for row in cm)):
            raise _fail(path, "test.confusion_matrix", f"{k}x{k} counts (one row and column per class)", cm)
    epochs = m.get("epochs")
    if epochs is not None:
        if not isinstance(epochs, list):
            raise _fail(path, "epochs", "a list of per-epoch rows", epochs)
        for i, row in enumerate(epochs):
            _epoch_row(path, f"epochs[{i}]", row)
    system = _mapping(path, "system", m.get("system"))
    _mapping(path, "system.versions", system.get("versions"))
    for key in ("cores", "threads"):
        _count(path, f"system.{key}", system.get(key))
    _mapping(path, "config", m.get("config"))


def _epoch_row(path: Path, field: str, row: Any) -> None:
    if not isinstance(row, dict):
        raise _fail(path, field, "a mapping of per-epoch values", row)
    for key, v in row.items():
        if key in ("seconds", "elapsed_seconds"):
            _number(path, f"{field}.{key}", v, (0.0, math.inf))
        elif key == "epoch":
            _count(path, f"{field}.epoch", v)
        else:
            _number(path, f"{field}.{key}", v, nan_ok=True)


def check_state(path: Path, state: dict[str, Any]) -> None:
    _text(path, "status", state.get("status"))
    _text(path, "reason", state.get("reason"))
    for key in ("epoch", "epochs"):
        _count(path, key, state.get(key))


def check_history(path: Path, rows: list[dict[str, float]]) -> None:
    for i, row in enumerate(rows):
        line = f"line {i + 2}"
        for key, v in row.items():
            if key == "epoch":
                if not (math.isfinite(v) and v >= 1 and v == int(v) and v <= 1e6):
                    raise _fail(path, f"{line}: epoch", "a whole number >= 1", v)
            elif key in ("seconds", "elapsed_seconds"):
                _number(path, f"{line}: {key}", v, (0.0, math.inf))
            else:
                _number(path, f"{line}: {key}", v, nan_ok=True)


def _labels(path: Path, name: str, a: np.ndarray, n: int | None, k: int | None) -> None:
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise UserError(f"{path}: {name}: expected a 1-D integer array (got {a.dtype} of shape {a.shape})")
    if n is not None and a.shape[0] != n:
        raise UserError(f"{path}: {name}: expected {n} values (got {a.shape[0]})")
    if a.size and (a.min() < 0 or (k is not None and a.max() >= k)):
        raise UserError(f"{path}: {name}: class index out of range 0..{(k or 1) - 1} "
                        f"(got {int(a.min())}..{int(a.max())})")


def _images(path: Path, name: str, a: np.ndarray, n: int | None) -> None:
    ok = (a.dtype == np.uint8 and a.ndim in (3, 4) and (a.ndim == 3 or a.shape[3] in (1, 3))
          and a.shape[0] <= _MAX_GRID and 0 < a.shape[1] <= _MAX_SIDE and 0 < a.shape[2] <= _MAX_SIDE)
    if not ok:
        raise UserError(f"{path}: {name}: expected up to {_MAX_GRID} uint8 images N x H x W (x 3), "
                        f"at most {_MAX_SIDE} px a side (got {a.dtype} of shape {a.shape})")
    if n is not None and a.shape[0] != n:
        raise UserError(f"{path}: {name}: expected {n} images (got {a.shape[0]})")


def n_classes(metrics: dict[str, Any] | None) -> int | None:
    """The class count recorded in (checked) metrics: its class list, else its confusion matrix."""
    classes = ((metrics or {}).get("dataset") or {}).get("classes")
    cm = ((metrics or {}).get("test") or {}).get("confusion_matrix")
    return len(classes) if classes else (len(cm) if cm else None)


def check_predictions(path: Path, data: dict[str, np.ndarray], k: int | None) -> None:
    """Shapes, dtypes and class ranges of predictions.npz (``k``: number of classes, if known)."""
    y_true = data["y_true"]
    _labels(path, "y_true", y_true, None, k)
    _labels(path, "y_pred", data["y_pred"], y_true.shape[0], k)
    probs = data.get("probs")
    if probs is not None:
        if not (probs.ndim == 2 and probs.shape[0] == y_true.shape[0] and np.issubdtype(probs.dtype, np.floating)
                and (k is None or probs.shape[1] == k) and np.isfinite(probs).all()):
            raise UserError(f"{path}: probs: expected finite floats of shape ({y_true.shape[0]}, "
                            f"{k if k is not None else 'classes'}) (got {probs.dtype} of shape {probs.shape})")
    if "mis_images" in data:
        m = data["mis_images"]
        _images(path, "mis_images", m, None)
        for name in ("mis_true", "mis_pred"):
            if name not in data:
                raise UserError(f"{path}: {name}: missing (mis_images needs it)")
            _labels(path, name, data[name], m.shape[0], k)
    if "train_images" in data:
        t = data["train_images"]
        _images(path, "train_images", t, None)
        if "train_labels" not in data:
            raise UserError(f"{path}: train_labels: missing (train_images needs it)")
        _labels(path, "train_labels", data["train_labels"], t.shape[0], k)
