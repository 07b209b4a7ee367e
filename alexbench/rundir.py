"""The run folder: its file names, its formats, and the one place that reads and writes them.

A run folder (``train --out DIR``, or one entry of ``run --out DIR``) holds::

    DIR/
      config.yaml        the resolved config: every auto/null decided at run time as the value that ran
      requested.yaml     the config as given (before those decisions): what --resume compares with
      state.json         how far the run got: {"status", "epoch", "epochs", "pid", "updated"[, "reason"],
                         "dataset": {"name", "source", "sha256"}}
      log.txt            append-only log
      history.csv        one row per finished epoch, columns HISTORY_COLUMNS
      checkpoints/       last.<ext>, last.prev.<ext>, best.<ext> (see alexbench.checkpoint)
      predictions.npz    test y_true, y_pred, probs (+ a few images for the report)
      metrics.json       written last: the run is finished when it exists

``alexbench run --out DIR`` adds ``DIR/run.json`` (the status of every entry) and one
run folder per entry, named by :func:`run_slug`. Training writes these files through
the writers here; the report reads them through the readers here. Every write is atomic.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from alexbench import __version__
from alexbench.atomic import atomic_path, atomic_write_json, atomic_write_text
from alexbench.bounded_yaml import YamlLimit, load_bounded, read_capped
from alexbench.errors import UserError
from alexbench.runnames import (
    BACKEND_NAMES,
    entry_label,
    framework_key,
    framework_label,
    run_backend,
    run_slug,
)

__all__ = [
    "CONFIG", "STATE", "LOG", "HISTORY", "CHECKPOINTS", "PREDICTIONS", "METRICS", "RUN_STATUS", "RESOURCES",
    "EVENTS_GLOB", "EXPORT", "REQUESTED",
    "RUN_FILES", "CONFIG_HEADER", "REQUESTED_HEADER", "HISTORY_COLUMNS",
    "entry_label", "run_slug", "run_backend", "framework_key", "framework_label", "BACKEND_NAMES", "code_version",
    "preprocessing", "check_preprocessing", "checkpoint_meta",
    "is_run_dir", "is_run_folder",
    "read_json", "read_state", "write_state", "read_config", "write_config", "write_requested", "read_history",
    "write_history",
    "read_predictions", "write_predictions", "write_metrics",
]

CONFIG = "config.yaml"
STATE = "state.json"
LOG = "log.txt"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
PREDICTIONS = "predictions.npz"
METRICS = "metrics.json"
RUN_STATUS = "run.json"  # in the --out folder of ``alexbench run``, next to its entries' run folders
RESOURCES = "resources.csv"  # written by alexbench.resources
EVENTS_GLOB = "events.out.tfevents.*"  # TensorBoard event files, written by alexbench.tblog
EXPORT = "export"  # default folder of `alexbench export`
REQUESTED = "requested.yaml"  # the config as given, before run time decided auto/null values
#: what a run writes into its folder, in the order it first writes them
RUN_FILES = (REQUESTED, CONFIG, LOG, STATE, HISTORY, METRICS, PREDICTIONS, CHECKPOINTS, RESOURCES)
#: the first line of every config.yaml a run writes: proof that the folder is alexbench's
CONFIG_HEADER = "# alexbench: the resolved config of this run"
#: the first line of requested.yaml
REQUESTED_HEADER = "# alexbench: the config as given to this run (config.yaml holds the values that ran)"

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "elapsed_seconds",
                   "images_per_second")
_REQUIRED_HISTORY = ("epoch", "train_acc", "val_acc")
MAX_FILE_BYTES = 64 << 20  # metrics.json of a 1000-class run is a few MB; history.csv a few KB
MAX_PREDICTIONS_BYTES = 1 << 30  # probs of 50,000 images x 1000 classes in float32: 200 MB
_REQUIRED_PREDICTIONS = ("y_true", "y_pred")


# -- the code version (the names of runs are in alexbench.runnames) ---------------------------

@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """alexbench version plus a hash of its own source files (what ran, even outside git)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return f"{__version__}+src.{h.hexdigest()[:12]}"


# -- the run's preprocessing ------------------------------------------------------------------

def preprocessing(norm: Any, input_size: int, image_size: Sequence[int], classes: Sequence[str],
                  tta_flip: bool) -> dict[str, Any]:
    """What a model trained in this run expects of its input, recorded once per run.

    ``norm`` is the run's :class:`~alexbench.data.stream.Normalization`. The record is stored
    in every checkpoint (``meta["inference"]``) and in ``metrics.json`` (``dataset.classes``
    and ``dataset.preprocess``); ``eval`` (and ``predict``/``export``) read it instead of
    recomputing anything from data::

        {"classes": ["airplane", ...],            # index i is the model's output i
         "preprocess": {"normalization": "dataset",  # the preset the numbers came from
                        "mean": [r, g, b], "std": [r, g, b],  # in channel_order, on the 0..255 scale
                        "channel_order": "RGB",   # or "BGR" (caffe): channels are swapped before (x - mean) / std
                        "scale": "0-255",
                        "image_size": [h, w],     # the training images' size (null: not recorded)
                        "input_size": 32,         # the model's input side (the batch is resized to it)
                        "tta_flip": true}}        # evaluation averages the logits of the image and its mirror
    """
    return {"classes": [str(c) for c in classes],
            "preprocess": {"normalization": str(norm.name), "mean": [float(v) for v in norm.mean],
                           "std": [float(v) for v in norm.std], "channel_order": "BGR" if norm.bgr else "RGB",
                           "scale": "0-255", "image_size": [int(v) for v in image_size][:2],
                           "input_size": int(input_size), "tta_flip": bool(tta_flip)}}


def check_preprocessing(record: Any, where: str) -> dict[str, Any]:
    """``record`` (see :func:`preprocessing`) checked; a UserError naming ``where`` when it is malformed."""
    try:
        classes, pre = record["classes"], record["preprocess"]
        ok = (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
              and pre["channel_order"] in ("RGB", "BGR") and int(pre["input_size"]) >= 1
              and len(pre["mean"]) == 3 and len(pre["std"]) == 3
              and (pre["image_size"] is None or len(pre["image_size"]) == 2)
              and all(math.isfinite(float(v)) for v in pre["mean"])
              and all(math.isfinite(float(v)) and float(v) > 0 for v in pre["std"]))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"{where}: the recorded preprocessing is incomplete or malformed")
    return record


def checkpoint_meta(progress: Mapping[str, Any], config: Mapping[str, Any],
                    inference: Mapping[str, Any] | None = None) -> dict:
    """The metadata every checkpoint carries: the loop's progress, the resolved config, the code version
    and the run's preprocessing (``inference``, see :func:`preprocessing`)."""
    meta = {"progress": dict(progress), "config": dict(config), "code_version": code_version()}
    if inference is not None:
        meta["inference"] = dict(inference)
    return meta


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds at least one file a run writes about itself (what the report loads)."""
    return any((Path(path) / f).is_file() for f in (METRICS, HISTORY, STATE))


def is_run_folder(folder: Path) -> bool:
    """True when ``folder`` holds a run that alexbench wrote (any version): its state.json is a run
    state, or its config.yaml starts with :data:`CONFIG_HEADER`. Reads a few bytes only."""
    state = Path(folder) / STATE
    if state.is_file() and state.stat().st_size < 1 << 20:
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and "status" in data and "epochs" in data:
            return True
    try:
        with open(Path(folder) / CONFIG, "rb") as fh:
            return fh.read(len(CONFIG_HEADER)) == CONFIG_HEADER.encode()
    except OSError:
        return False


# -- JSON files ------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    """The text of a run-folder file, read with a size cap (:data:`MAX_FILE_BYTES`)."""
    try:
        return read_capped(path, MAX_FILE_BYTES).decode("utf-8")
    except YamlLimit:
        raise UserError(f"{path}: refused: larger than {MAX_FILE_BYTES >> 20} MiB") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a UserError naming the file and what is wrong."""
    try:
        text = _read_text(path)
    except FileNotFoundError:
        raise UserError(f"{path}: not found (is this a run folder?)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); "
                        "the run may have been interrupted while writing it") from None
    except (ValueError, RecursionError) as exc:  # an over-long integer, absurd nesting
        raise UserError(f"{path}: refused: {str(exc).split(';')[0] or 'nested too deeply'}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object at the top level (got {type(obj).__name__})")
    return obj


def read_state(run: Path) -> dict[str, Any]:
    """``state.json`` of ``run``; ``{}`` when it is missing or unreadable (the run never started)."""
    try:
        state = json.loads((Path(run) / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(run: Path, status: str, epoch: int, epochs: int, reason: str | None = None,
                dataset: Mapping[str, Any] | None = None) -> None:
    """``status`` is running, interrupted, failed or finished; ``epoch`` counts the finished epochs.

    ``dataset`` (name, source, sha256: what the run trains on) is kept from the previous state
    when not given, so a resume can check that it continues on the same data.
    """
    state: dict[str, Any] = {"status": status, "epoch": epoch, "epochs": epochs, "pid": os.getpid(),
                             "updated": time.time()}
    if reason:
        state["reason"] = reason
    recorded = dataset if dataset is not None else read_state(run).get("dataset")
    if isinstance(recorded, Mapping):
        state["dataset"] = {k: recorded.get(k) for k in ("name", "source", "sha256")}
    atomic_write_json(Path(run) / STATE, state)


def write_metrics(run: Path, metrics: Mapping[str, Any]) -> None:
    """``metrics.json``, strict JSON: a NaN or infinity is written as null (see ``null_reasons`` in it)."""
    atomic_write_json(Path(run) / METRICS, metrics)


# -- config.yaml -----------------------------------------------------------------------------

def write_config(run: Path, text: str) -> None:
    """``text`` is the resolved config as YAML (``alexbench.config.dump_yaml``). A run writes it as
    given when it starts, then again once every auto/null value is decided (input_size,
    normalization with its numbers, threads, device, precision); it loads as a config
    (``--config runs/x/config.yaml`` repeats the run with those values)."""
    atomic_write_text(Path(run) / CONFIG, text)


def write_requested(run: Path, text: str) -> None:
    """``requested.yaml``: the config as given to the run (``dump_yaml(cfg, REQUESTED_HEADER)``), written
    once when it starts and kept on ``--resume``; it loads as a config too."""
    atomic_write_text(Path(run) / REQUESTED, text)


def read_config(path: Path) -> tuple[dict[str, Any], str]:
    """(mapping, text) of a config.yaml; ``({}, "")`` when there is none. Only safe, bounded YAML is read."""
    path = Path(path)
    if not path.is_file():
        return {}, ""
    try:
        text = read_capped(path).decode("utf-8")
        cfg = load_bounded(text) or {}
    except (YamlLimit, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping at the top level (got {type(cfg).__name__})")
    return cfg, text


# -- history.csv -----------------------------------------------------------------------------

def write_history(run: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite ``history.csv`` with one row per epoch (floats with 6 significant digits; a missing value is nan)."""
    lines = [",".join(HISTORY_COLUMNS)]
    for r in rows:
        lines.append(",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else "nan" if r[c] is None else str(r[c])
                              for c in HISTORY_COLUMNS))
    atomic_write_text(Path(run) / HISTORY, "\n".join(lines) + "\n")


def _to_float(value: str) -> float:
    value = value.strip()
    return math.nan if value in ("", "nan", "NaN", "None") else float(value)


def read_history(path: Path) -> list[dict[str, float]]:
    """Parse a history.csv. A half-written last line (an older writer appended) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return []
    missing = [c for c in _REQUIRED_HISTORY if c not in header]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    lines = list(reader)
    rows: list[dict[str, float]] = []
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line:
            continue
        try:
            if len(line) != len(header):
                raise ValueError(f"{len(line)} fields, expected {len(header)}")
            row = {h: _to_float(v) for h, v in zip(header, line)}
        except ValueError as exc:
            if last and not text.endswith("\n"):
                break  # the writer is mid-line; the row will be complete next time
            raise UserError(f"{path}: line {i + 2}: {exc}") from None
        rows.append(row)
    if rows and "elapsed_seconds" not in header:
        elapsed = 0.0
        for r in rows:
            elapsed += r.get("seconds", 0.0) or 0.0
            r["elapsed_seconds"] = elapsed
    return rows


# -- predictions.npz -------------------------------------------------------------------------

def write_predictions(run: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``predictions.npz``: at least ``y_true``, ``y_pred`` and ``probs``; compressed, no pickle."""
    missing = [k for k in (*_REQUIRED_PREDICTIONS, "probs") if k not in arrays]
    if missing:
        raise ValueError(f"predictions: missing array(s) {', '.join(missing)}")
    with atomic_path(Path(run) / PREDICTIONS) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle


def read_predictions(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a predictions.npz (None when there is none); a UserError when it is damaged."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as zf:  # the declared sizes, before anything is decompressed
            expanded = sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    if expanded > MAX_PREDICTIONS_BYTES:
        raise UserError(f"{path}: refused: its arrays expand to {expanded >> 20} MiB "
                        f"(at most {MAX_PREDICTIONS_BYTES >> 20} MiB)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    missing = [k for k in _REQUIRED_PREDICTIONS if k not in data]
    if missing:
        raise UserError(f"{path}: missing array(s) {', '.join(missing)}")
    if data["y_true"].shape != data["y_pred"].shape:
        raise UserError(f"{path}: y_true and y_pred differ in shape "
                        f"({data['y_true'].shape} vs {data['y_pred'].shape})")
    return data
