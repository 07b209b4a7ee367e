"""What a training run and a checkpoint evaluation share: data, normalisation, model check, system record,
and the resolved config.

``config.yaml`` holds the resolved config: every value that was ``auto`` or ``null`` and
got decided at run time (input size, normalization with its numbers, threads, device,
precision) is written as the value that ran (:func:`resolved_config`). ``requested.yaml``
keeps the config as given: what ``--resume`` compares with (:mod:`alexbench.resume`).
"""

from __future__ import annotations

import os
import platform
import resource
import sys

import numpy as np

from alexbench import __version__
from alexbench.config import NormalizationConfig, TrainConfig, validate
from alexbench.data.stream import Normalization, normalization, split_train_val, take_balanced
from alexbench.engines import Engine
from alexbench.errors import UserError

__all__ = ["prepare_data", "pick_normalization", "run_normalization", "check_model", "system_info", "peak_rss_bytes",
           "resolved_config"]


def peak_rss_bytes() -> int:
    """The largest resident set size this process has had, in bytes."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)


def system_info(engine: Engine, threads: int) -> dict:
    """The ``system`` block of metrics.json: the machine, the engine's device and precision, versions."""
    from alexbench.frameworks import cpu_name

    versions = {"alexbench": __version__, "numpy": np.__version__, "python": platform.python_version()}
    from importlib.metadata import PackageNotFoundError, version

    # the installed distribution's metadata gives every version, so a run reads the same whether or not
    # it imported the framework (torchvision's module says 0.29.1+cu130 where its metadata says 0.29.1,
    # and TensorFlow is not imported in a torch run: it costs seconds and prints its start-up lines);
    # a framework without metadata (a source checkout) falls back to the loaded module's __version__
    for mod, dists in (("torch", ("torch",)), ("torchvision", ("torchvision",)),
                       ("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",)), ("jax", ("jax",)),
                       ("jaxlib", ("jaxlib",))):
        versions[mod] = None
        for dist in dists:
            try:
                versions[mod] = version(dist)
                break
            except PackageNotFoundError:
                continue
        if versions[mod] is None:
            versions[mod] = getattr(sys.modules.get(mod), "__version__", None)
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "device": engine.device,
            "precision": engine.precision, "compiled": bool(getattr(engine, "compiled", engine.cfg.compile)),
            "keras_batchnorm": getattr(engine, "batchnorm", None),
            "platform": platform.platform(), "python": platform.python_version(), "versions": versions}


def prepare_data(cfg: TrainConfig, source) -> tuple:  # noqa: ANN001 - str, None or a Dataset
    """(dataset, splits): the source loaded, split into train/val by the config's seed, subset if asked."""
    from alexbench.data import Dataset, load_dataset

    ds = source if isinstance(source, Dataset) else load_dataset(source)
    splits = split_train_val(ds, cfg.val_fraction, cfg.seed)
    splits.x_train, splits.y_train = take_balanced(splits.x_train, splits.y_train, cfg.max_train_images, cfg.seed,
                                                   "max_train_images")
    if cfg.max_test_images:
        splits.x_test, splits.y_test = take_balanced(splits.x_test, splits.y_test, cfg.max_test_images, 0,
                                                     "max_test_images")
    return ds, splits


def pick_normalization(cfg: TrainConfig) -> str:
    """The input normalisation: the config's, else what the model's (pretrained) weights expect."""
    from alexbench.models import MODELS

    if isinstance(cfg.normalization, NormalizationConfig):
        return cfg.normalization.name
    if cfg.normalization:
        return cfg.normalization
    spec = MODELS[cfg.model]
    if cfg.pretrained:
        return spec.pretrained_norm.get(cfg.framework, "imagenet")
    return spec.default_norm


def run_normalization(cfg: TrainConfig, x_train: np.ndarray) -> Normalization:
    """The numbers a run normalises with: those in ``cfg`` when it holds them, else the preset's
    (``dataset``: the mean and std of ``x_train``, the training split)."""
    n = cfg.normalization
    if isinstance(n, NormalizationConfig):
        return Normalization(n.name, n.mean, n.std, bgr=n.channel_order == "BGR")
    return normalization(pick_normalization(cfg), x_train)


def resolved_config(cfg: TrainConfig, norm: Normalization, input_size: int, threads: int,
                    engine: Engine) -> TrainConfig:
    """``cfg`` with every value decided at run time written as the value that runs (config.yaml)."""
    device = engine.device
    if device.startswith("/"):  # TensorFlow's "/CPU:0", "/GPU:1" -> the config's "cpu", "gpu:1"
        kind, _, idx = device[1:].lower().partition(":")
        device = "cpu" if kind == "cpu" else f"{kind}:{idx or 0}"
    values = {"input_size": input_size, "threads": threads, "device": device, "precision": engine.precision,
              "normalization": {"name": norm.name, "mean": list(norm.mean), "std": list(norm.std),
                                "channel_order": "BGR" if norm.bgr else "RGB"}}
    return validate({**cfg.model_dump(mode="json"), **values}, "resolved config")


def check_model(cfg: TrainConfig) -> None:
    """A UserError naming the valid models when the config's model is not registered."""
    from alexbench.models import MODELS

    if cfg.model not in MODELS:
        raise UserError(f"model: unknown model {cfg.model!r} (valid: {', '.join(sorted(MODELS))})")
