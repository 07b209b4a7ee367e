"""``alexbench train``: the command line around :func:`alexbench.train.train`."""

from __future__ import annotations

from pathlib import Path

from alexbench import distributed
from alexbench.config import TrainConfig, resolve_config
from alexbench.resume import resume_config_from_args
from alexbench.train import train

__all__ = ["config_from_args", "train_command"]


def config_from_args(args) -> TrainConfig:  # noqa: ANN001 - argparse namespace
    """The config a fresh `train` asks for: defaults < --config < --set, with --model/--framework/--pretrained."""
    base = {"model": args.model, "framework": args.framework}
    if getattr(args, "pretrained", None):
        base["pretrained"] = args.pretrained
    if getattr(args, "weights", None):
        base["weights"] = args.weights
    return resolve_config(args.config, args.overrides, base=base)


def train_command(args) -> int:  # noqa: ANN001 - argparse namespace
    cfg = (resume_config_from_args(args, Path(args.out)) if args.resume else None) or config_from_args(args)
    if (getattr(args, "nproc", None) or 1) > 1:
        from alexbench.launch import launch_train

        return launch_train(args, cfg)
    metrics = train(cfg, args.out, data=args.data, resume=args.resume, force=getattr(args, "force", False))
    if not distributed.from_env().is_main:  # rank 0 prints the result
        return 0
    t = metrics["test"]
    print(f"{metrics['entry']}: test accuracy {t['accuracy']:.4f} "
          f"[{t['accuracy_ci95'][0]:.4f}, {t['accuracy_ci95'][1]:.4f}], macro-F1 {t['macro_f1']:.4f}; "
          f"run folder {args.out}")
    if metrics["dataset"].get("embedded_sample"):
        print("note: trained and tested on the small embedded CIFAR-10 sample, not full CIFAR-10; indicative only")
    return 0
