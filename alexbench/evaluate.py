"""``alexbench eval``: evaluate a run's checkpoint (or a checkpoint file) on a source's test set.

The checkpoint is read, and refused if it is bad or hostile, before any data is decoded.
The model is rebuilt from the run's ``config.yaml`` and fed the images exactly as in
training: the normalization numbers, channel order, input size and class names recorded
with the checkpoint are used, never recomputed from the data. The data is the run's own
source unless ``--data`` names another one, which must have the same class names in the
same order.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from alexbench import checkpoint as ckpt
from alexbench import rundir
from alexbench.atomic import atomic_write_json
from alexbench.config import load_yaml, validate
from alexbench.data.stream import Normalization, eval_batches
from alexbench.errors import UserError
from alexbench.metrics import classification_metrics
from alexbench.outputs import check_json_output
from alexbench.prepare import prepare_data

__all__ = ["evaluate_checkpoint", "run_preprocessing", "eval_command"]


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


def _checkpoint_meta(blob, ck: Path) -> dict:  # noqa: ANN001 - dict (torch) or NpzFile (keras)
    try:
        raw = blob["meta_json"]
        meta = json.loads(raw if isinstance(raw, str) else str(raw))
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{ck}: the checkpoint has no readable metadata") from None
    if not isinstance(meta, dict):
        raise UserError(f"{ck}: the checkpoint metadata is not a JSON object")
    return meta


def run_preprocessing(meta: dict, ck: Path, run_dir: Path, tta_flip: bool) -> dict:
    """The preprocessing record (:func:`alexbench.rundir.preprocessing`) a checkpoint was trained with.

    Checkpoints carry it in ``meta["inference"]``. Checkpoints written before they did fall back
    to the finished run's ``metrics.json`` (its ``dataset`` block held the classes, the
    normalization numbers and the input size; the training images' size is then unknown,
    ``null``); without either, the record is unknown and
    nothing is recomputed: a UserError says so.
    """
    if "inference" in meta:
        return rundir.check_preprocessing(meta["inference"], f"{ck}: inference")
    metrics_path = run_dir / rundir.METRICS
    try:
        d = rundir.read_json(metrics_path)["dataset"]
        norm = d["normalization"]
        record = {"classes": d["classes"], "preprocess": {
            "normalization": norm["name"], "mean": norm["mean"], "std": norm["std"],
            "channel_order": "BGR" if norm.get("bgr") else "RGB", "scale": "0-255",
            "image_size": None, "input_size": d["input_size"], "tta_flip": bool(tta_flip)}}
    except (UserError, KeyError, TypeError):
        raise UserError(f"{ck}: the checkpoint does not record the preprocessing it was trained with (written "
                        f"by an older alexbench) and {metrics_path} is not a finished run's metrics to read it from; "
                        "re-train, or evaluate the run folder of a finished run") from None
    return rundir.check_preprocessing(record, str(metrics_path))


def evaluate_checkpoint(target: str, data: str | None = None) -> dict:
    """Evaluate a run folder's best (else last) checkpoint, or a checkpoint file, on a source's test set.

    The model sees the images exactly as in training: the normalization numbers, channel order and
    input size come from the checkpoint (see :func:`run_preprocessing`), never from the new source.
    A source whose class names or their order differ from the run's is refused.
    """
    from alexbench.engines import make_engine, read_checkpoint

    ck, run_dir = _pick_checkpoint(Path(target))
    cfg_path = run_dir / rundir.CONFIG
    if not cfg_path.exists():
        raise UserError(f"{cfg_path}: not found (a checkpoint is evaluated with its run's {rundir.CONFIG})")
    cfg = validate(load_yaml(cfg_path), str(cfg_path))
    if ck.suffix != ckpt.EXT[cfg.framework]:
        raise UserError(f"{ck}: expected a {cfg.framework} checkpoint ({ckpt.EXT[cfg.framework]})")
    blob = read_checkpoint(cfg.framework, str(ck))  # refuse a bad or hostile file before decoding any data
    record = run_preprocessing(_checkpoint_meta(blob, ck), ck, run_dir, cfg.tta_flip)
    source = data if data is not None else _run_source(run_dir)
    ds, splits = prepare_data(cfg, source)
    if list(splits.classes) != record["classes"]:
        raise UserError(f"{source or ds.source}: class names {list(splits.classes)} differ from the ones the "
                        f"checkpoint was trained on {record['classes']} "
                        "(eval needs the same classes in the same order)")
    pre = record["preprocess"]
    norm = Normalization(pre["normalization"], tuple(pre["mean"]), tuple(pre["std"]), bgr=pre["channel_order"] == "BGR")
    engine = make_engine(cfg.model_copy(update={"pretrained": None}), len(record["classes"]), norm, pre["input_size"])
    engine.build()
    engine.load_weights_only(str(ck), blob)
    t0 = time.perf_counter()
    probs, loss = engine.predict(eval_batches(splits.x_test, splits.y_test, cfg.eval_batch_size))
    return {"checkpoint": str(ck), "dataset": ds.describe(), "preprocess": pre,
            "eval_seconds": time.perf_counter() - t0,
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
    if res["dataset"].get("embedded_sample"):
        print("note: evaluated on the small embedded CIFAR-10 sample, not full CIFAR-10; indicative only")
    if args.out:
        atomic_write_json(args.out, res)
    return 0
