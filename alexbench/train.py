"""One run: the shared training loop, evaluation and the run folder.

The loop is framework-neutral; an :class:`~alexbench.engines.Engine` does the
framework work. Everything a run produces goes into its run folder, whose files and
formats :mod:`alexbench.rundir` defines (see docs/architecture.md).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from alexbench import checkpoint as ckpt
from alexbench import distributed, rundir
from alexbench.atomic import RunLock
from alexbench.config import TrainConfig, dump_yaml
from alexbench.data.stream import BatchStream, Splits, prefetch
from alexbench.engines import Engine
from alexbench.errors import TrainingDiverged, UserError
from alexbench.finish import finish_run
from alexbench.hooks import Hooks
from alexbench.loopstate import WARMUP_STEPS, Interrupt, Progress, RunLog, progress_bar
from alexbench.outputs import (
    claim_run_folder,
    ensure_folder,
    is_run_folder,
    missing_dirs,
    remove_empty,
    removed_if_unstarted,
)
from alexbench.prepare import check_model, prepare_data, resolved_config, run_normalization
from alexbench.resume import check_same_data, recorded_dataset, same_run_config
from alexbench.schedule import lr_at


def entry_label(cfg: TrainConfig) -> str:
    return rundir.entry_label(cfg.model, cfg.framework, cfg.pretrained, cfg.seed, cfg.keras_backend)


def train(cfg: TrainConfig | None, out_dir: str | os.PathLike, *, data=None,  # noqa: ANN001 - source or Dataset
          resume: bool = False, on_epoch_end: Callable[[Path, dict], None] | None = None,
          quiet: bool | None = None, force: bool = False, hooks: Hooks | None = None,
          keep_failed: bool = False) -> dict:
    """Train and evaluate one model in one framework; returns the metrics dict (also in metrics.json).
    Under torchrun the run is data-parallel: rank 0 alone touches ``out_dir`` (:mod:`alexbench.distributed`).

    A folder that is not an alexbench run and holds files a run writes is refused unless ``force``.
    With ``resume``, the run in ``out_dir`` continues only if ``cfg`` computes the same run as its
    stored config (``None``: continue the stored config) and ``data`` is the data it started on
    (``None``: the source it recorded); see :mod:`alexbench.resume`.
    ``on_epoch_end(run_folder, history_row)`` runs after each epoch's files are written;
    ``hooks`` (see :mod:`alexbench.hooks`) watch steps, evaluation passes and checkpoints.
    A run that fails before its first checkpoint removes the files it wrote and the folders it
    created, unless ``keep_failed`` (``alexbench run`` records the failure in the entry's folder).
    """
    from alexbench.backend_process import needs_child, run_config, train_in_child

    run_cfg = run_config(cfg, Path(out_dir), resume)
    # Keras already runs on another backend in this process (refused: a missing one)
    if run_cfg is not None and needs_child(run_cfg):
        if hooks is not None:
            raise ValueError("hooks cannot watch a Keras run that trains in a child process (another backend)")
        quiet = bool(os.environ.get("ALEXBENCH_QUIET")) if quiet is None else quiet
        return train_in_child(run_cfg, ensure_folder(out_dir, "--out"), data=data, resume=resume,
                              on_epoch_end=on_epoch_end, quiet=quiet, force=force)
    dist = distributed.setup(cfg)
    finished = False
    try:
        if not dist.is_main:
            result = _train_locked(cfg, Path(out_dir), data, resume, None, True, None, hooks or Hooks(), force, dist)
            finished = True
            return result
        made = missing_dirs(Path(out_dir))
        out = ensure_folder(out_dir, "--out")
        if quiet is None:
            quiet = bool(os.environ.get("ALEXBENCH_QUIET"))
        try:  # a run that fails before its first checkpoint leaves nothing it created
            with RunLock(out) as lock, removed_if_unstarted(out, not keep_failed):
                if not resume:
                    claim_run_folder(out, force)
                result = _train_locked(cfg, out, data, resume, on_epoch_end, quiet, lock, hooks or Hooks(), force,
                                       dist)
                finished = True
                return result
        except BaseException:
            if not keep_failed:
                remove_empty(made)
            raise
    finally:
        distributed.teardown(finished)


def _state(out: Path, *args: Any, **kwargs: Any) -> None:
    """Write state.json (rank 0 alone in a data-parallel run)."""
    if distributed.current().is_main:
        rundir.write_state(out, *args, **kwargs)


def _resolve_run(cfg: TrainConfig | None, out: Path, resume: bool, force: bool, data) -> tuple:  # noqa: ANN001
    """What the folder says (rank 0 reads it): the config to run (the saved one on resume), whether a
    checkpoint exists, the metrics of a run that already finished (then there is nothing to do), the
    data the run was started on, and the source to continue on when none was given."""
    saved_cfg = out / rundir.CONFIG
    ckpt_dir = out / rundir.CHECKPOINTS
    have_ckpt = any(ckpt_dir.glob("last*")) if ckpt_dir.exists() else False
    recorded: dict = {}  # the data the run was started on (state.json), checked on resume
    if resume:
        if not saved_cfg.exists():
            raise UserError(f"{out}: nothing to resume (no config.yaml); start without --resume")
        cfg = same_run_config(out, cfg)
        recorded = recorded_dataset(out)
        if (out / rundir.METRICS).exists() and rundir.read_state(out).get("status") == "finished":
            return cfg, have_ckpt, rundir.read_json(out / rundir.METRICS), recorded, None
        if data is None and isinstance(recorded.get("source"), str) and Path(recorded["source"]).exists():
            return cfg, have_ckpt, None, recorded, recorded["source"]  # plain --resume: the run's own data
    elif ((out / rundir.METRICS).exists() or have_ckpt) and not (force and not is_run_folder(out)):
        raise UserError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    return cfg, have_ckpt, None, recorded, None


def _train_locked(cfg: TrainConfig | None, out: Path, data,  # noqa: ANN001
                  resume: bool, on_epoch_end: Callable[[Path, dict], None] | None, quiet: bool,
                  lock: RunLock | None, hooks: Hooks, force: bool = False,
                  dist: distributed.Dist = distributed.SINGLE) -> dict:
    # rank 0 reads the folder; the other ranks get what it found
    found = _resolve_run(cfg, out, resume, force, data) if dist.is_main else None
    cfg, have_ckpt, done, recorded, source = distributed.share(found)
    if done is not None:
        return done
    data = source or data
    check_model(cfg)
    distributed.check_config(cfg, dist.world_size, dist.backend == "nccl")
    log = RunLog(out / rundir.LOG if dist.is_main else None, quiet)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:  # the config as given (what a resume compares with); config.yaml is rewritten below,
            rundir.write_requested(out, dump_yaml(cfg, rundir.REQUESTED_HEADER))  # once every value is decided
            rundir.write_config(out, dump_yaml(cfg))
    if lock is not None and lock.took_over_from:
        log(f"took over a stale lock left by PID {lock.took_over_from}")

    from alexbench.engines import make_engine
    from alexbench.frameworks import set_threads
    from alexbench.models import MODELS, flops_per_image
    from alexbench.models.flops import keras_flops

    threads = set_threads(cfg.threads or dist.threads())
    ds, splits = prepare_data(cfg, data)
    check_same_data(recorded, ds)
    if ds.embedded:
        log("note: training on the small embedded CIFAR-10 sample, not full CIFAR-10; accuracies are indicative only")
    spec = MODELS[cfg.model]
    input_size = cfg.input_size or spec.input_size
    norm = run_normalization(cfg, splits.x_train)
    engine = make_engine(cfg, len(splits.classes), norm, input_size)
    cfg = resolved_config(cfg, norm, input_size, threads, engine)
    if dist.is_main:
        rundir.write_config(out, dump_yaml(cfg))
    inference = rundir.preprocessing(norm, input_size, splits.x_train.shape[1:3], splits.classes, cfg.tta_flip)
    engine.build()
    trainable, total = engine.params()
    # counted on the run's own framework (equal in both: parity checks it); a Keras run needs no torch:
    # it reads the shapes of the model it built, a torch run counts a weightless copy (meta device)
    flops = keras_flops(engine.model) if cfg.framework == "keras" else flops_per_image(
        cfg.model, len(splits.classes), "torch", input_size=input_size, **cfg.model_options)
    stream = BatchStream(splits.x_train, splits.y_train, cfg.batch_size, cfg.seed, augment=cfg.augment.enabled,
                         pad=cfg.augment.crop_padding, flip=cfg.augment.flip, rank=dist.rank,
                         world_size=dist.world_size)
    steps = len(stream)
    if steps == 0:
        raise UserError(f"batch_size: {cfg.batch_size} is larger than the training split ({len(splits.y_train)})")

    prog = Progress()
    if resume and have_ckpt:
        meta, path = distributed.load_on_main(
            lambda: ckpt.load_with_fallback(out, "last", cfg.framework, engine.load), engine)
        prog = Progress.from_meta(meta["progress"], str(path))
        log(f"resumed from {path} at epoch {prog.epoch + 1}, step {prog.step}"
            + (f" with {dist.world_size} processes" if dist.active else ""))
    info = {
        "entry": entry_label(cfg), "cfg": cfg, "ds": ds, "splits": splits, "engine": engine, "norm": norm,
        "input_size": input_size, "params": (trainable, total), "flops": flops, "threads": threads,
        "hooks": hooks, "inference": inference, "dist": dist,
        "images_per_epoch": min(steps * cfg.batch_size, len(splits.y_train)),
    }
    log(f"{entry_label(cfg)}: {total:,} params, {flops / 1e6:.1f} MFLOPs/image, input {input_size}px, "
        f"{engine.device} {engine.precision}{' compiled' if getattr(engine, 'compiled', False) else ''}, "
        f"{len(splits.y_train)} train / {len(splits.y_val)} val / "
        f"{len(splits.y_test)} test from {ds.name}{dist.describe(cfg.batch_size, threads)}")
    for note in getattr(engine, "notes", ()):
        log(note)
    _state(out, "running", prog.epoch, cfg.epochs, dataset={"name": ds.name, "source": ds.source, "sha256": ds.sha256})
    from alexbench.monitor import RunMonitors

    # TensorBoard events and resources.csv: rank 0 alone (it samples its own process and the machine)
    watch = cfg if dist.is_main else cfg.model_copy(update={"tensorboard": False, "resource_interval_seconds": 0})
    with RunMonitors(out, watch, engine.device) as monitors:
        info["monitors"] = monitors

        def epoch_end(run: Path, row: dict) -> None:
            monitors.epoch(row)
            if on_epoch_end:
                on_epoch_end(run, row)
        _loop(cfg, out, engine, stream, splits, prog, log, epoch_end, quiet, hooks, inference)
        return finish_run(out, info, prog, log)


def _save(out: Path, name: str, engine: Engine, cfg: TrainConfig, prog: Progress, hooks: Hooks,
          inference: dict) -> Path | None:
    """Checkpoint ``name`` (last or best); ``last`` keeps the previous one as ``last.prev``.
    Rank 0 alone writes checkpoints (None on the other ranks)."""
    if not distributed.current().is_main:
        return None
    meta = rundir.checkpoint_meta(prog.to_meta(), cfg.model_dump(mode="json"), inference)
    path = ckpt.save(out, name, cfg.framework, lambda p: engine.save(p, meta), keep_previous=name == "last")
    hooks.checkpoint_written(name, path, meta["progress"])
    return path


def _loop(cfg: TrainConfig, out: Path, engine: Engine, stream: BatchStream, splits: Splits, prog: Progress,
          log: RunLog, on_epoch_end: Callable[[Path, dict], None] | None, quiet: bool, hooks: Hooks,
          inference: dict) -> None:
    steps = len(stream)
    ckpt_every = cfg.checkpoint_minutes * 60.0
    pretrained_phases = bool(cfg.pretrained) and cfg.finetune.freeze_epochs > 0
    frozen_now: bool | None = None
    bar = progress_bar(quiet)
    warm = 0
    with Interrupt() as intr:
        if bar:
            bar.start()
        try:
            while prog.epoch < cfg.epochs and not prog.stopped_early:
                epoch = prog.epoch
                frozen = pretrained_phases and epoch < cfg.finetune.freeze_epochs
                if frozen != frozen_now:
                    if pretrained_phases:
                        engine.set_base_trainable(not frozen)
                        phase = "frozen base, training the head" if frozen else "all layers trainable"
                        log(f"epoch {epoch + 1}: {phase}")
                    frozen_now = frozen
                lr_scale = cfg.finetune.unfrozen_lr_scale if (pretrained_phases and not frozen) else 1.0
                engine.train_mode()
                task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps, completed=prog.step,
                                    stats="") if bar else None
                last_save = time.perf_counter()
                t_epoch = time.perf_counter()
                # the lr of the epoch's last step so far: a checkpoint taken after its final step
                # resumes with no step left to run, and the epoch row still needs it
                lr = lr_at(max(prog.global_step - 1, 0), steps, cfg.epochs, cfg.optimizer.lr, cfg.schedule) * lr_scale
                it = prefetch(stream.batches(epoch, prog.step))
                t_wait = time.perf_counter()
                for xb, yb in it:
                    t0 = time.perf_counter()
                    data_s = t0 - t_wait
                    lr = lr_at(prog.global_step, steps, cfg.epochs, cfg.optimizer.lr, cfg.schedule) * lr_scale
                    hooks.step_start(prog.global_step)
                    loss, correct = engine.train_step(xb, yb, lr)
                    hooks.step_end(prog.global_step, loss)
                    t1 = time.perf_counter()
                    if not math.isfinite(loss):
                        # the global batch's loss: every rank stops here
                        _state(out, "failed", epoch, cfg.epochs, f"loss became {loss} at epoch {epoch + 1}")
                        kept = (f"the last good checkpoint is kept in {out / rundir.CHECKPOINTS}"
                                if any((out / rundir.CHECKPOINTS).glob("last*")) else "no checkpoint was written yet")
                        raise TrainingDiverged(
                            f"loss became {loss} at epoch {epoch + 1}, step {prog.step + 1} (lr {lr:.3g}); "
                            f"stopped; {kept}; lower optimizer.lr or use warm-up")
                    n = len(yb) * stream.world_size  # loss and correct are the global batch's
                    prog.loss_sum += loss * n
                    prog.correct += correct
                    prog.seen += n
                    prog.step += 1
                    prog.global_step += 1
                    warm += 1
                    if warm > WARMUP_STEPS:
                        prog.timed_images += n
                        prog.timed_seconds += t1 - t_wait
                        prog.data_seconds += data_s
                        prog.step_seconds += t1 - t_wait
                    if task is not None:
                        el = time.perf_counter() - t_epoch
                        bar.update(task, advance=1, stats=f"loss {prog.loss_sum / prog.seen:.3f} "
                                   f"acc {prog.correct / prog.seen:.3f} {prog.seen / max(el, 1e-9):.0f} img/s")
                    stop = distributed.any_flag(intr.flag)  # Ctrl-C reaches the ranks at different steps
                    if stop or time.perf_counter() - last_save >= ckpt_every:
                        prog.epoch_seconds += time.perf_counter() - t_epoch
                        prog.train_seconds += time.perf_counter() - t_epoch
                        t_epoch = time.perf_counter()
                        path = _save(out, "last", engine, cfg, prog, hooks, inference)
                        last_save = time.perf_counter()
                        if stop:
                            _state(out, "interrupted", epoch, cfg.epochs)
                            log(f"interrupted: checkpoint written to {path}; continue with --resume")
                            raise KeyboardInterrupt
                    t_wait = time.perf_counter()
                elapsed = time.perf_counter() - t_epoch
                prog.epoch_seconds += elapsed
                prog.train_seconds += elapsed
                if task is not None:
                    bar.remove_task(task)
                _end_epoch(cfg, out, engine, splits, prog, log, lr, hooks, inference)
                if on_epoch_end:
                    on_epoch_end(out, prog.history[-1])
        finally:
            if bar:
                bar.stop()


def _end_epoch(cfg: TrainConfig, out: Path, engine: Engine, splits: Splits, prog: Progress, log: RunLog,
               lr: float, hooks: Hooks, inference: dict) -> None:
    epoch = prog.epoch
    if len(splits.y_val):
        probs, val_loss = distributed.predict(engine, splits.x_val, splits.y_val, cfg.eval_batch_size, hooks)
        val_acc = float((probs.argmax(1) == splits.y_val).mean())
    else:
        val_loss, val_acc = float("nan"), float("nan")
    ips = prog.timed_images / prog.timed_seconds if prog.timed_seconds > 0 else float("nan")
    row = {"epoch": epoch + 1, "train_loss": prog.loss_sum / max(prog.seen, 1),
           "train_acc": prog.correct / max(prog.seen, 1), "val_loss": float(val_loss), "val_acc": val_acc,
           "lr": float(lr), "seconds": prog.epoch_seconds, "elapsed_seconds": prog.train_seconds,
           "images_per_second": ips}
    prog.history.append(row)
    speed = (f"{ips:.0f} img/s" if math.isfinite(ips)
             else f"img/s not timed (the first {WARMUP_STEPS} steps are warm-up)")
    val = f"val loss {val_loss:.4f} acc {val_acc:.4f}" if len(splits.y_val) else "no validation split"
    log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
        f"{val} | {row['seconds']:.1f}s, {speed}")
    improved = (not len(splits.y_val)) or val_acc > prog.best_val
    prog.epoch, prog.step = epoch + 1, 0
    prog.loss_sum, prog.correct, prog.seen, prog.epoch_seconds = 0.0, 0, 0, 0.0
    if improved:
        prog.best_val, prog.best_epoch, prog.bad_epochs = (val_acc if len(splits.y_val) else -1.0), epoch + 1, 0
    else:
        prog.bad_epochs += 1
        if cfg.early_stopping_patience and prog.bad_epochs >= cfg.early_stopping_patience:
            prog.stopped_early = True
            log(f"early stopping: no val improvement for {prog.bad_epochs} epochs")
    if distributed.current().is_main:
        rundir.write_history(out, prog.history)
    if improved:  # best is chosen on validation only, never on test
        _save(out, "best", engine, cfg, prog, hooks, inference)
    _save(out, "last", engine, cfg, prog, hooks, inference)
    _state(out, "running", prog.epoch, cfg.epochs)


__all__ = ["train", "entry_label"]
