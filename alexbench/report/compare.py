"""Read run folders and compare them: one row per run, one line per comparable pair.

Everything here only reads the files a run folder holds (``config.yaml``,
``history.csv``, ``metrics.json``, ``predictions.npz``, ``state.json``); nothing is
re-trained or re-evaluated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from alexbench import rundir
from alexbench.errors import UserError
from alexbench.report.checks import check_history, check_metrics, check_predictions, check_state, n_classes
from alexbench.resources import read_resources
from alexbench.rundir import RESOURCES, entry_label, is_run_dir
from alexbench.stats import mcnemar_exact, mean_std, paired_difference, wilson_interval

__all__ = ["RunRecord", "load_run", "load_runs", "expand_run_dirs", "compare", "compare_runs"]


@dataclass
class RunRecord:
    """Everything the report needs from one run folder, already parsed.

    ``metrics`` is ``None`` while the run is in progress (or failed before the end);
    ``status`` then comes from ``state.json`` ("running" by default).
    """

    path: Path
    config: dict[str, Any]
    config_text: str
    history: list[dict[str, float]]
    metrics: dict[str, Any] | None
    state: dict[str, Any] | None
    predictions: dict[str, np.ndarray] | None = None
    resources: list[dict[str, float | None]] = field(default_factory=list)  # resources.csv rows
    label: str = ""
    notes: list[str] = field(default_factory=list)

    # --- identity -------------------------------------------------------------------
    def _get(self, key: str, default: Any = None) -> Any:
        if self.metrics is not None and key in self.metrics:
            return self.metrics[key]
        return self.config.get(key, default)

    @property
    def model(self) -> str:
        return str(self._get("model", "?"))

    @property
    def framework(self) -> str:
        return str(self._get("framework", "?"))

    @property
    def backend(self) -> str:
        """``torch``, or the Keras backend (``keras_backend`` of the config; TensorFlow for older runs)."""
        b = self._get("backend") or (self.config.get("keras_backend") if self.framework == "keras" else None)
        return rundir.run_backend(self.framework, b)

    @property
    def framework_label(self) -> str:
        """``PyTorch``, ``Keras (TensorFlow)``, ``Keras (JAX)`` or ``Keras (torch)``."""
        return rundir.framework_label(self.framework, self.backend)

    @property
    def pretrained(self) -> str | None:
        p = self._get("pretrained")
        return None if p in (None, "", False, "none", "None") else str(p)

    @property
    def seed(self) -> int | None:
        s = self._get("seed")
        try:
            return int(s)
        except (TypeError, ValueError):
            return None

    @property
    def init(self) -> str:
        """'scratch', 'imagenet' or 'weights:<file name>'."""
        p = self.pretrained
        if p is None:
            return "scratch"
        return p if p == "imagenet" else f"weights:{Path(p).name}"

    # --- progress -------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def status(self) -> str:
        if self.metrics is not None:
            return str(self.metrics.get("status", "finished"))
        return str((self.state or {}).get("status", "running"))

    @property
    def epochs_done(self) -> int:
        if self.metrics is not None and self.metrics.get("epochs"):
            return len(self.metrics["epochs"])
        return len(self.history)

    @property
    def epochs_total(self) -> int | None:
        for src in (self.state or {}, self.config):
            try:
                return int(src["epochs"])
            except (KeyError, TypeError, ValueError):
                continue
        return None

    @property
    def progress(self) -> str:
        """e.g. 'finished', 'running, epoch 3/10', 'failed: reason'."""
        st = self.status
        if st == "running":
            total = self.epochs_total
            done = int((self.state or {}).get("epoch", self.epochs_done) or 0)
            return f"running, epoch {done}/{total}" if total else f"running, epoch {done}"
        reason = (self.state or {}).get("reason")
        return f"{st}: {reason}" if reason and st != "finished" else st

    # --- results --------------------------------------------------------------------
    @property
    def test(self) -> dict[str, Any]:
        return (self.metrics or {}).get("test") or {}

    @property
    def dataset(self) -> dict[str, Any]:
        if self.metrics is not None and isinstance(self.metrics.get("dataset"), dict):
            return self.metrics["dataset"]
        d = self.config.get("dataset") or self.config.get("data")
        return d if isinstance(d, dict) else {}

    @property
    def classes(self) -> list[str]:
        cls = self.dataset.get("classes")
        if cls:
            return [str(c) for c in cls]
        pca = self.test.get("per_class_accuracy") or {}
        return [str(c) for c in pca]

    @property
    def accuracy(self) -> float | None:
        acc = self.test.get("accuracy")
        return None if acc is None else float(acc)

    @property
    def accuracy_ci95(self) -> tuple[float, float] | None:
        ci = self.test.get("accuracy_ci95")
        if ci is not None and len(ci) == 2:
            return float(ci[0]), float(ci[1])
        n = self.n_test
        if self.accuracy is not None and n:
            return wilson_interval(round(self.accuracy * n), n)
        return None

    @property
    def n_test(self) -> int | None:
        if self.predictions is not None:
            return int(self.predictions["y_true"].size)
        n = self.dataset.get("test")
        return int(n) if isinstance(n, (int, float)) and n > 0 else None

    @property
    def curve(self) -> list[dict[str, float]]:
        """Per-epoch rows: history.csv when present (it has wall-clock time), else metrics.epochs."""
        if self.history:
            return self.history
        rows = [dict(r) for r in (self.metrics or {}).get("epochs") or []]
        elapsed = 0.0
        for r in rows:
            elapsed += float(r.get("seconds") or 0.0)
            r.setdefault("elapsed_seconds", elapsed)
        return rows

    def correct(self) -> np.ndarray | None:
        """Boolean vector: test image i classified correctly (None without predictions)."""
        if self.predictions is None:
            return None
        return self.predictions["y_pred"] == self.predictions["y_true"]


# ------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------

def load_run(path: str | Path, *, allow_incomplete: bool = False) -> RunRecord:
    """Load one run folder.

    A finished run needs ``metrics.json``. With ``allow_incomplete=True`` a folder with
    only ``history.csv`` and/or ``state.json`` (a run in progress, failed or skipped)
    loads too, with ``metrics=None``. Raises :class:`UserError` naming the file when a
    file is missing or corrupt.
    """
    run = Path(path)
    if not run.exists():
        raise UserError(f"{run}: no such run folder")
    if not run.is_dir():
        raise UserError(f"{run}: not a folder (pass a run folder, the one holding metrics.json)")
    metrics_path = run / rundir.METRICS
    state = rundir.read_json(run / rundir.STATE) if (run / rundir.STATE).is_file() else None
    if state is not None:
        check_state(run / rundir.STATE, state)
    if metrics_path.is_file() or not allow_incomplete:
        if not metrics_path.is_file() and state is not None and state.get("status") == "running":
            raise UserError(f"{metrics_path}: not found; the run is still in progress "
                            f"(epoch {state.get('epoch', '?')}/{state.get('epochs', '?')})")
        metrics = rundir.read_json(metrics_path)
        for key in ("model", "framework", "test"):
            if key not in metrics:
                raise UserError(f"{metrics_path}: missing key '{key}'")
        if not isinstance(metrics["test"], dict) or "accuracy" not in metrics["test"]:
            raise UserError(f"{metrics_path}: test.accuracy missing")
        check_metrics(metrics_path, metrics)
    else:
        if not is_run_dir(run):
            raise UserError(f"{metrics_path}: not found (is this a run folder?)")
        metrics = None
    config, config_text = rundir.read_config(run / rundir.CONFIG)
    if not config and metrics is not None and isinstance(metrics.get("config"), dict):
        config = metrics["config"]
    if not config_text and config:
        config_text = yaml.safe_dump(config, sort_keys=False)
    history = rundir.read_history(run / rundir.HISTORY)
    check_history(run / rundir.HISTORY, history)
    predictions = rundir.read_predictions(run / rundir.PREDICTIONS) if metrics is not None else None
    if predictions is not None:
        check_predictions(run / rundir.PREDICTIONS, predictions, n_classes(metrics))
    rec = RunRecord(path=run, config=config, config_text=config_text, history=history, metrics=metrics,
                    state=state, predictions=predictions, resources=read_resources(run / RESOURCES))
    rec.label = str((metrics or {}).get("entry") or config.get("entry") or
                    entry_label(rec.model, rec.framework, rec.pretrained, rec.seed, rec.backend))
    if metrics is not None and rec.predictions is None:
        rec.notes.append("predictions.npz missing: no McNemar test and no image grids for this run")
    return rec


def expand_run_dirs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Accept run folders, or a folder of run folders (the ``--out`` of ``alexbench run``)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not is_run_dir(p):
            children = sorted(c for c in p.iterdir() if c.is_dir() and is_run_dir(c))
            if children:
                out.extend(children)
                continue
        out.append(p)
    return out


def load_runs(paths: Iterable[str | os.PathLike | RunRecord], *, allow_incomplete: bool = True) -> list[RunRecord]:
    """Load several runs (see :func:`expand_run_dirs`) and make their labels unique."""
    items: list[Path | RunRecord] = []
    for p in paths:
        items.extend([p] if isinstance(p, RunRecord) else expand_run_dirs([p]))
    runs = [p if isinstance(p, RunRecord) else load_run(p, allow_incomplete=allow_incomplete) for p in items]
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.path.name})"
    return runs


# ------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------

def _row(r: RunRecord) -> dict[str, Any]:
    m = r.metrics or {}
    ci = r.accuracy_ci95
    return {
        "entry": r.label,
        "path": str(r.path),
        "model": r.model,
        "framework": r.framework,
        "backend": r.backend,
        "framework_label": r.framework_label,
        "pretrained": r.pretrained,
        "init": r.init,
        "seed": r.seed,
        "status": r.status,
        "progress": r.progress,
        "params_total": m.get("params_total"),
        "params_trainable": m.get("params_trainable"),
        "flops_per_image": m.get("flops_per_image"),
        "train_flops": m.get("train_flops"),
        "epochs": r.epochs_done,
        "epochs_total": r.epochs_total,
        "best_epoch": m.get("best_epoch"),
        "train_seconds": m.get("train_seconds", (r.curve[-1].get("elapsed_seconds") if r.curve else None)),
        "images_per_second": m.get("images_per_second"),
        "test_accuracy": r.accuracy,
        "accuracy_ci95": list(ci) if ci else None,
        "macro_f1": r.test.get("macro_f1"),
        "top5_accuracy": r.test.get("top5_accuracy"),
        "test_loss": r.test.get("loss"),
        "n_test": r.n_test,
        "dataset": r.dataset.get("name"),
        "dataset_sha256": r.dataset.get("sha256"),
    }


def _pair(a: RunRecord, b: RunRecord) -> dict[str, Any] | str:
    """Pairwise statistics, or the reason the pair cannot be compared."""
    sha_a, sha_b = a.dataset.get("sha256"), b.dataset.get("sha256")
    if sha_a != sha_b:
        return "different datasets (sha256 differs)"
    ca, cb = a.correct(), b.correct()
    if ca is None or cb is None:
        return "predictions.npz missing"
    ya, yb = a.predictions["y_true"], b.predictions["y_true"]  # type: ignore[index]
    if ya.shape != yb.shape or not np.array_equal(ya, yb):
        return "different test labels (not the same test set in the same order)"
    mc = mcnemar_exact(ca, cb)
    d = paired_difference(ca, cb)
    return {
        "a": a.label, "b": b.label, "n": mc.n,
        "acc_a": float(ca.mean()), "acc_b": float(cb.mean()),
        "only_a_right": mc.b, "only_b_right": mc.c,
        "p_value": mc.p_value, "verdict": mc.verdict, "alpha": mc.alpha,
        "diff": d.diff, "diff_ci95": [d.lo, d.hi], "diff_method": d.method,
    }


def _groups(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Mean ± sample std over seeds for entries that differ only in seed."""
    by_key: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        if r.finished:
            by_key.setdefault((r.model, r.framework, r.backend, r.pretrained), []).append(r)
    groups = []
    for (model, fw, backend, pre), rs in by_key.items():
        seeds = sorted({r.seed for r in rs if r.seed is not None})
        if len(rs) < 2 or len(seeds) < 2:
            continue
        acc = mean_std([r.accuracy for r in rs])
        f1 = mean_std([r.test.get("macro_f1") for r in rs])
        ts = mean_std([(r.metrics or {}).get("train_seconds") for r in rs])
        groups.append({
            "model": model, "framework": fw, "backend": backend, "framework_label": rundir.framework_label(fw, backend),
            "pretrained": pre, "init": rs[0].init,
            "label": entry_label(model, fw, pre, None, backend), "n": len(rs), "seeds": seeds,
            "accuracy_mean": acc[0], "accuracy_std": acc[1],
            "macro_f1_mean": f1[0], "macro_f1_std": f1[1],
            "train_seconds_mean": ts[0], "train_seconds_std": ts[1],
        })
    return groups


def compare(run_dirs: Sequence[str | Path | RunRecord]) -> dict[str, Any]:
    """Compare runs. Returns a JSON-ready dict.

    - ``rows``: one per run (model, framework, pretrained, params, FLOPs, training PFLOP, epochs, train
      time, img/s, test accuracy with its 95% Wilson interval, macro-F1, best epoch,
      status). Runs still in progress have ``None`` for test-based fields.
    - ``pairs``: for each pair of finished runs evaluated on the same test set (same
      dataset sha256 and identical ``y_true``): exact McNemar p-value and verdict at
      alpha 0.05, and the paired accuracy difference (A - B) with its 95% interval.
    - ``not_compared``: pairs that could not be compared, with the reason.
    - ``groups``: mean ± sample std (ddof=1) over seeds, for entries run with several seeds.
    - ``embedded_sample``: the runs trained on the small embedded sample, not full CIFAR-10.
    """
    runs = load_runs(run_dirs)
    if not runs:
        raise UserError("compare: no run folders given")
    return compare_runs(runs)


def compare_runs(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """:func:`compare` for runs already loaded (the report loads them once)."""
    pairs, skipped = [], []
    finished = [r for r in runs if r.finished]
    for a, b in combinations(finished, 2):
        res = _pair(a, b)
        if isinstance(res, str):
            skipped.append({"a": a.label, "b": b.label, "reason": res})
        else:
            pairs.append(res)
    return {"rows": [_row(r) for r in runs], "pairs": pairs, "not_compared": skipped,
            "groups": _groups(runs),
            "embedded_sample": [r.label for r in runs if (r.dataset or {}).get("embedded_sample")]}
