"""The end of a run: test evaluation, ``predictions.npz``, ``metrics.json`` and the finished state.

:func:`alexbench.train.train` calls :func:`finish_run` once the loop is done; the files' formats are
:mod:`alexbench.rundir`'s.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from alexbench import checkpoint as ckpt
from alexbench import distributed, rundir
from alexbench.config import TrainConfig
from alexbench.data.stream import BatchStream, Splits
from alexbench.loopstate import WARMUP_STEPS, Progress, RunLog
from alexbench.metrics import classification_metrics
from alexbench.prepare import peak_rss_bytes, system_info


def sample_images(splits: Splits, cfg: TrainConfig, k: int = 32) -> tuple[np.ndarray, np.ndarray]:
    stream = BatchStream(splits.x_train, splits.y_train, min(k, len(splits.y_train)), cfg.seed,
                         augment=cfg.augment.enabled, pad=cfg.augment.crop_padding, flip=cfg.augment.flip)
    return stream.batch(stream.plan(0), 0)


def null_reasons(cfg: TrainConfig, prog: Progress) -> dict[str, str]:
    """Why a value of metrics.json is null (JSON has no NaN), by key; ``epochs[].k`` is key k of an epoch row."""
    warm = (f"not timed: all {prog.global_step} steps were warm-up (the first {WARMUP_STEPS} steps after each "
            "start or resume are not timed); train longer to measure speed")
    reasons = {}
    if prog.timed_seconds <= 0:
        reasons["images_per_second"] = reasons["data_share"] = warm
    if any(not isinstance(r["images_per_second"], float) or not math.isfinite(r["images_per_second"])
           for r in prog.history):
        reasons["epochs[].images_per_second"] = (f"null for an epoch that ended within the warm-up (the first "
                                                 f"{WARMUP_STEPS} steps after each start or resume are not timed)")
    if cfg.val_fraction == 0:
        reasons["epochs[].val_loss"] = reasons["epochs[].val_acc"] = "no validation split (val_fraction: 0)"
    return reasons


def train_flops(flops_per_image: float, images_per_epoch: int, epochs_done: int) -> int:
    """Training compute of a run in FLOPs: 3 x forward FLOPs (forward + backward, the convention that the
    backward pass costs twice the forward) for every image of every finished epoch. Validation and test
    passes are not counted; epochs with a frozen base count as if every layer trained (an upper bound)."""
    return int(3 * flops_per_image * images_per_epoch * epochs_done)


def finish_run(out: Path, info: dict, prog: Progress, log: RunLog) -> dict:
    """Evaluate on the test split (the best-on-validation weights), then write predictions.npz, metrics.json
    and the finished state; ``info`` holds what the run set up (engine, splits, dataset, ...)."""
    cfg: TrainConfig = info["cfg"]
    engine, splits, ds, dist = info["engine"], info["splits"], info["ds"], info["dist"]
    best = ckpt.ckpt_path(out, "best", cfg.framework)
    if prog.best_epoch != len(prog.history) and distributed.share(dist.is_main and best.exists()):
        distributed.load_on_main(lambda: engine.load_weights_only(str(best)), engine, optimizer=False)
        log(f"evaluating the best-on-validation weights (epoch {prog.best_epoch})")
    t0 = time.perf_counter()
    probs, test_loss = distributed.predict(engine, splits.x_test, splits.y_test, cfg.eval_batch_size, info["hooks"])
    eval_seconds = time.perf_counter() - t0
    test = classification_metrics(splits.y_test, probs, splits.classes, test_loss)
    if not dist.is_main:  # rank 0 writes the files; the others return what it wrote
        return distributed.share(None)
    y_pred = probs.argmax(1).astype(np.int64)
    wrong = np.flatnonzero(y_pred != splits.y_test)[:32]
    train_imgs, train_labels = sample_images(splits, cfg)
    rundir.write_predictions(out, {
        "y_true": splits.y_test.astype(np.int64), "y_pred": y_pred, "probs": probs.astype(np.float32),
        "mis_images": splits.x_test[wrong], "mis_true": splits.y_test[wrong].astype(np.int64),
        "mis_pred": y_pred[wrong], "mis_index": wrong.astype(np.int64), "train_images": train_imgs,
        "train_labels": train_labels.astype(np.int64)})
    dataset = ds.describe()
    dataset.update({"train": len(splits.y_train), "val": len(splits.y_val), "test": len(splits.y_test),
                    "normalization": info["norm"].to_dict(), "input_size": info["input_size"],
                    "classes": info["inference"]["classes"], "preprocess": info["inference"]["preprocess"]})
    data_share = prog.data_seconds / prog.step_seconds if prog.step_seconds > 0 else None
    trainable, total = info["params"]
    metrics = {
        "model": cfg.model, "framework": cfg.framework, "backend": rundir.run_backend(cfg.framework, cfg.keras_backend),
        "pretrained": cfg.pretrained, "entry": info["entry"],
        "seed": cfg.seed, "dataset": dataset, "params_trainable": int(trainable), "params_total": int(total),
        "flops_per_image": int(info["flops"]),
        "train_flops": train_flops(info["flops"], info["images_per_epoch"], len(prog.history)),
        "epochs": prog.history, "best_epoch": prog.best_epoch,
        "test": test, "train_seconds": prog.train_seconds,
        "images_per_second": prog.timed_images / prog.timed_seconds if prog.timed_seconds > 0 else None,
        "eval_seconds": eval_seconds,
        "data_seconds_per_step": prog.data_seconds / max(1, prog.global_step - WARMUP_STEPS),
        "data_share": data_share, "peak_rss_bytes": peak_rss_bytes(),
        "system": system_info(engine, info["threads"]), "config": cfg.model_dump(mode="json"),
        "code_version": rundir.code_version(), "stopped_early": prog.stopped_early, "status": "finished",
        "null_reasons": null_reasons(cfg, prog), "world_size": dist.world_size * getattr(engine, "replicas", 1),
        "strategy": _strategy(dist, engine),
    }
    info["monitors"].finish(metrics)  # resource summary into metrics; test metrics to TensorBoard
    rundir.write_metrics(out, metrics)
    rundir.write_state(out, "finished", prog.epoch, cfg.epochs)
    distributed.share(metrics)
    lo, hi = test["accuracy_ci95"]
    log(f"test accuracy {test['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}), macro-F1 {test['macro_f1']:.4f}, "
        f"train {prog.train_seconds:.0f}s, {metrics['train_flops'] / 1e15:.3f} PFLOP; run folder {out}")
    return metrics


def _strategy(dist: distributed.Dist, engine: Any) -> str | None:
    """How the run was data-parallel: ``ddp`` (torch processes), ``mirrored`` / ``data_parallel`` (Keras on several
    devices, TensorFlow / JAX), or None."""
    if dist.active:
        return "ddp"
    return getattr(engine, "strategy_name", None)
