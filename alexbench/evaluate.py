"""``alexbench eval``: evaluate a run's checkpoint (or a checkpoint file) on a source's test set.

The checkpoint is read, and refused if it is bad or hostile, before any data is decoded.
The model is rebuilt from the run's ``config.yaml``; the data is the run's own source
unless ``--data`` names another one.
"""

from __future__ import annotations

import time
from pathlib import Path

from alexbench import checkpoint as ckpt
from alexbench import rundir
from alexbench.atomic import atomic_write_json
from alexbench.config import load_yaml, validate
from alexbench.data.stream import eval_batches, normalization
from alexbench.errors import UserError
from alexbench.metrics import classification_metrics
from alexbench.outputs import check_json_output
from alexbench.train import pick_normalization, prepare_data

__all__ = ["evaluate_checkpoint", "eval_command"]


def _pick_checkpoint(target: Path) -> tuple[Path, Path]:
    """(checkpoint file, its run folder) for a run folder (best, else last) or a checkpoint file."""
    if not target.exists():
        raise UserError(f"{target}: not found")
    if not target.is_dir():
        return target, target.parent.parent
    folder = target / rundir.CHECKPOINTS
    cands = sorted(folder.glob("best.*")) + sorted(folder.glob("last.*"))
    cands = [c for c in cands if ".prev" not in c.name and not c.name.endswith(".tmp")]
    if not cands:
        raise UserError(f"{target}: no {rundir.CHECKPOINTS}/best.* or last.* (is this a run folder?)")
    return cands[0], target


def _run_source(run_dir: Path) -> str | None:
    """The data source recorded in the run's metrics.json, if it finished."""
    try:
        return rundir.read_json(run_dir / rundir.METRICS)["dataset"]["source"]
    except (UserError, KeyError, TypeError):
        return None


def evaluate_checkpoint(target: str, data: str | None = None) -> dict:
    """Evaluate a run folder's best (else last) checkpoint, or a checkpoint file, on a source's test set."""
    from alexbench.engines import make_engine, read_checkpoint
    from alexbench.models import MODELS

    ck, run_dir = _pick_checkpoint(Path(target))
    cfg_path = run_dir / rundir.CONFIG
    if not cfg_path.exists():
        raise UserError(f"{cfg_path}: not found (a checkpoint is evaluated with its run's {rundir.CONFIG})")
    cfg = validate(load_yaml(cfg_path), str(cfg_path))
    if ck.suffix != ckpt.EXT[cfg.framework]:
        raise UserError(f"{ck}: expected a {cfg.framework} checkpoint ({ckpt.EXT[cfg.framework]})")
    blob = read_checkpoint(cfg.framework, str(ck))  # refuse a bad or hostile file before decoding any data
    ds, splits = prepare_data(cfg, data if data is not None else _run_source(run_dir))
    spec = MODELS[cfg.model]
    norm = normalization(pick_normalization(cfg), splits.x_train)
    engine = make_engine(cfg.model_copy(update={"pretrained": None}), len(splits.classes), norm,
                         cfg.input_size or spec.input_size)
    engine.build()
    engine.load_weights_only(str(ck), blob)
    t0 = time.perf_counter()
    probs, loss = engine.predict(eval_batches(splits.x_test, splits.y_test, cfg.eval_batch_size))
    return {"checkpoint": str(ck), "dataset": ds.describe(), "eval_seconds": time.perf_counter() - t0,
            "test": classification_metrics(splits.y_test, probs, splits.classes, loss)}


def eval_command(args) -> int:  # noqa: ANN001 - argparse namespace
    if args.out:  # before the work: never replace a file eval did not write
        check_json_output(args.out, ("checkpoint", "dataset", "test"), "--out", getattr(args, "force", False))
    res = evaluate_checkpoint(args.target, args.data)
    t = res["test"]
    print(f"{res['checkpoint']} on {res['dataset']['name']} ({t['n']} test images): accuracy {t['accuracy']:.4f} "
          f"[{t['accuracy_ci95'][0]:.4f}, {t['accuracy_ci95'][1]:.4f}], top-5 {t['top5_accuracy']:.4f}, "
          f"macro-F1 {t['macro_f1']:.4f}, loss {t['loss']:.4f}")
    for c, v in t["per_class_accuracy"].items():
        print(f"  {c:>12s}  {v:.4f}")
    if args.out:
        atomic_write_json(args.out, res)
    return 0
