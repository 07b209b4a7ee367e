"""Synthetic run folders with the exact layout the training engine writes.

Used by the report's tests (and handy for trying the report without training). The
numbers are made up but consistent: the confusion matrix, per-class accuracies,
predictions and accuracy all agree with each other.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from alexbench import rundir
from alexbench.data.dataset import CIFAR10_CLASSES as CLASSES
from alexbench.stats import per_class_from_confusion, wilson_interval

__all__ = ["make_fake_run"]


def _images(rng: np.random.Generator, n: int, labels: np.ndarray) -> np.ndarray:
    """Smooth colourful blobs, one hue per class, so grids look like pictures, not noise."""
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        hue = labels[i] / 10.0
        base = np.array([np.sin(2 * np.pi * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)])
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35)
        blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None]
        sky = np.stack([yy * 0.4 + 0.3] * 3, axis=-1)
        img = sky * (1 - blob) + base * blob + rng.normal(0, 0.03, (32, 32, 3))
        out[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


def make_fake_run(directory: str | Path, *, model: str = "alexnet_cifar", framework: str = "torch",
                  backend: str | None = None, pretrained: str | None = None, seed: int = 0, epochs: int = 5,
                  epochs_done: int | None = None,
                  accuracy: float = 0.7, n_test: int = 1000, y_true: np.ndarray | None = None,
                  dataset_name: str = "CIFAR-10", embedded_sample: bool = False, sha256: str = "ab" * 32,
                  seconds_per_epoch: float = 30.0, with_predictions: bool = True,
                  status: str | None = None, reason: str = "", entry: str | None = None) -> Path:
    """Write a run folder. ``epochs_done < epochs`` (or ``status="running"``) makes a run
    in progress: config.yaml, history.csv and state.json, but no metrics.json."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{model}/{rundir.framework_key(framework, backend)}/{pretrained}/{seed}"
                                           .encode()))
    done = epochs if epochs_done is None else epochs_done
    finished = done >= epochs and status in (None, "finished")
    config: dict[str, Any] = {
        "model": model, "framework": framework, "keras_backend": backend or "tensorflow", "pretrained": pretrained,
        "seed": seed, "epochs": epochs, "batch_size": 128, "deterministic": True,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "onecycle", "warmup_epochs": 1}, "augment": {"crop": 4, "flip": True},
    }
    rundir.write_config(d, yaml.safe_dump(config, sort_keys=False))

    rows, elapsed, epochs_list = [], 0.0, []
    for e in range(1, done + 1):
        t = e / epochs
        tr_acc = min(0.98, accuracy * (0.45 + 0.65 * t) + rng.normal(0, 0.005))
        va_acc = min(0.98, accuracy * (0.5 + 0.5 * t ** 0.7) + rng.normal(0, 0.01))
        sec = seconds_per_epoch * rng.uniform(0.95, 1.05)
        elapsed += sec
        r = {"epoch": e, "train_loss": 2.3 * (1 - tr_acc) + 0.1, "train_acc": tr_acc,
             "val_loss": 2.3 * (1 - va_acc) + 0.2, "val_acc": va_acc, "lr": 0.05 * (1 - t) + 1e-4,
             "seconds": sec, "elapsed_seconds": elapsed, "images_per_second": 45000 / sec}
        rows.append(r)
        epochs_list.append({k: v for k, v in r.items() if k != "elapsed_seconds"})
    rundir.write_history(d, rows)

    if not finished:
        st = status or "running"
        rundir.write_state(d, st, done, epochs, reason)
        return d
    rundir.write_state(d, "finished", done, epochs)

    C = len(CLASSES)
    yt = np.asarray(y_true if y_true is not None else np.arange(n_test) % C, dtype=np.int64)
    n = yt.size
    class_skill = np.clip(accuracy + rng.normal(0, 0.08, C), 0.05, 0.99)
    right = rng.random(n) < class_skill[yt]
    wrong = (yt + rng.integers(1, C, n)) % C
    yp = np.where(right, yt, wrong).astype(np.int64)
    probs = rng.dirichlet(np.ones(C), n).astype(np.float32) * 0.3
    probs[np.arange(n), yp] += 0.7
    cm = np.zeros((C, C), dtype=np.int64)
    np.add.at(cm, (yt, yp), 1)
    pca = per_class_from_confusion(cm)
    tp = np.diag(cm).astype(float)
    prec = np.divide(tp, cm.sum(0), out=np.zeros(C), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros(C), where=cm.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(C), where=(prec + rec) > 0)
    k = int(right.sum())
    acc = k / n
    mis = np.flatnonzero(~right)[:32]
    train_labels = np.arange(32, dtype=np.int64) % C
    best = int(np.argmax([r["val_acc"] for r in rows])) + 1
    metrics = {
        "model": model, "framework": framework, "backend": rundir.run_backend(framework, backend),
        "pretrained": pretrained, "entry": entry, "seed": seed,
        "dataset": {"name": dataset_name, "source": "/data/cifar-10-python.tar.gz", "format": "cifar-python",
                    "sha256": sha256, "embedded_sample": embedded_sample, "classes": CLASSES,
                    "train": 45000, "val": 5000, "test": n},
        "params_trainable": 2_473_610 if pretrained is None else 40_970,
        "params_total": 2_473_610 if pretrained is None else 57_044_810,
        "flops_per_image": 156_000_000 if pretrained is None else 714_000_000,
        "train_flops": 3 * (156_000_000 if pretrained is None else 714_000_000) * 45000 * done,
        "epochs": epochs_list, "best_epoch": best,
        "test": {"accuracy": acc, "accuracy_ci95": list(wilson_interval(k, n)),
                 "loss": 2.3 * (1 - acc) + 0.2,
                 "per_class_accuracy": {c: float(v) for c, v in zip(CLASSES, pca)},
                 "precision": {c: float(v) for c, v in zip(CLASSES, prec)},
                 "recall": {c: float(v) for c, v in zip(CLASSES, rec)},
                 "f1": {c: float(v) for c, v in zip(CLASSES, f1)},
                 "macro_f1": float(f1.mean()), "confusion_matrix": cm.tolist(),
                 "top5_accuracy": min(1.0, acc + 0.2)},
        "train_seconds": elapsed, "images_per_second": 45000 * done / max(elapsed, 1e-9),
        "eval_seconds": 3.2, "data_seconds_per_step": 0.004, "data_share": 0.06,
        "peak_rss_bytes": 1_900_000_000,
        "system": {"cpu": "Fake CPU @ 2.4GHz", "cores": 2, "threads": 2, "device": "cpu",
                   "python": "3.11.2", "versions": {"torch": "2.14.1", "torchvision": "0.29.1",
                                                    "tensorflow": "2.21.0", "keras": "3.15.1",
                                                    "alexbench": "0.1.0"}},
        "config": config, "code_version": "0.1.0+gdeadbee", "status": "finished",
    }
    if entry is None:
        del metrics["entry"]
    rundir.write_metrics(d, metrics)
    if with_predictions:
        rundir.write_predictions(d, {
            "y_true": yt, "y_pred": yp, "probs": probs, "mis_images": _images(rng, len(mis), yt[mis]),
            "mis_true": yt[mis], "mis_pred": yp[mis], "mis_index": mis.astype(np.int64),
            "train_images": _images(rng, 32, train_labels), "train_labels": train_labels})
    return d

