"""A trained model ready for inference: a run folder, a checkpoint or an exported ONNX file.

Whatever the source, :class:`Predictor` gives the class names, the run's own
preprocessing (:class:`~alexbench.preprocess.Preprocess`, read from the checkpoint, the
run's ``metrics.json`` or the ONNX metadata, never recomputed from data) and logits
for uint8 RGB images. ``export`` and ``predict`` are built on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alexbench import rundir
from alexbench.errors import UserError
from alexbench.preprocess import Preprocess

__all__ = ["Predictor", "load_predictor", "ported", "ONNX_KEYS", "check_images"]

BATCH = 64
# metadata_props keys of an exported ONNX file (values are strings; classes and preprocess are JSON)
ONNX_KEYS = ("classes", "preprocess", "layout", "model", "framework", "exporter", "source_checkpoint",
             "alexbench_version", "check_max_abs_logit_diff")


@dataclass
class Predictor:
    """Logits for images, with the class names and preprocessing that belong to them."""

    kind: str  # "torch", "keras" or "onnx"
    classes: list[str]
    pre: Preprocess
    layout: str  # "NCHW" (torch) or "NHWC" (keras); for ONNX, the exported graph's
    forward: Callable[[np.ndarray], np.ndarray]  # float32 model input -> float32 logits
    source: Path
    cfg: Any = None  # the run's TrainConfig (checkpoints only)
    net: Any = None  # the framework model (checkpoints only)
    notes: list[str] = field(default_factory=list)

    def raw_logits(self, images: np.ndarray) -> np.ndarray:
        """The network's logits for uint8 NHWC images at ``pre.image_size`` (no test-time flip)."""
        out = [self.forward(self.pre.model_input(images[i:i + BATCH], self.layout))
               for i in range(0, len(images), BATCH)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.classes)), np.float32)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits as the run evaluated them: averaged with the mirror image when the run used ``tta_flip``."""
        out = []
        for i in range(0, len(images), BATCH):
            x = self.pre.model_input(images[i:i + BATCH], self.layout)
            z = self.forward(x)
            if self.pre.tta_flip:
                w_axis = 3 if self.layout == "NCHW" else 2
                z = 0.5 * (z + self.forward(np.ascontiguousarray(np.flip(x, w_axis))))
            out.append(z)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.classes)), np.float32)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        z = self.logits(images).astype(np.float64)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)


def _inference_info(meta: dict, run_dir: Path, ck: Path, tta_flip: bool) -> tuple[list[str], Preprocess]:
    """Class names and preprocessing as recorded by the run (:func:`alexbench.evaluate.run_preprocessing`).

    A checkpoint from before the record held the training images' size: the size of the
    sample training images in the finished run's ``predictions.npz`` tells it.
    """
    from alexbench.evaluate import run_preprocessing

    record = run_preprocessing(meta, ck, run_dir, tta_flip)
    pre = dict(record["preprocess"])
    if pre.get("image_size") is None:
        try:
            with np.load(run_dir / rundir.PREDICTIONS, allow_pickle=False) as npz:
                pre["image_size"] = [int(v) for v in npz["train_images"].shape[1:3]]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{ck}: the training images' size is not recorded, and {run_dir / rundir.PREDICTIONS} "
                            f"cannot tell it ({type(exc).__name__})") from None
    return list(record["classes"]), Preprocess.from_dict(pre, f"{ck}: inference.preprocess")


def _framework_of(ck: Path) -> str:
    from alexbench.checkpoint import EXT

    for fw, ext in EXT.items():
        if ck.suffix == ext:
            return fw
    raise UserError(f"{ck}: not a checkpoint (.pt, .npz), run folder or .onnx file")


def _build(framework: str, cfg: Any, pre: Preprocess, n_classes: int) -> Any:
    """A CPU fp32 engine for ``cfg``'s architecture (no pretrained download, no compile)."""
    from alexbench.data.stream import Normalization
    from alexbench.engines import make_engine

    plain = cfg.model_copy(update={"framework": framework, "pretrained": None, "weights": None, "device": "cpu",
                                   "precision": "fp32", "compile": False, "deterministic": False,
                                   "channels_last": False})
    norm = Normalization(pre.normalization or "run", pre.mean, pre.std, bgr=pre.channel_order == "BGR")
    engine = make_engine(plain, n_classes, norm, pre.input_size)
    engine.build()
    return engine


def _forward_fn(framework: str, net: Any) -> Callable[[np.ndarray], np.ndarray]:
    if framework == "torch":
        import torch

        net.eval()

        def forward(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(x)).float().numpy()
        return forward

    def forward_keras(x: np.ndarray) -> np.ndarray:
        return np.asarray(net(x, training=False), dtype=np.float32)
    return forward_keras


def _load_checkpoint(target: Path) -> Predictor:
    from alexbench.config import validate
    from alexbench.engines import read_checkpoint
    from alexbench.evaluate import _checkpoint_meta, _pick_checkpoint

    ck, run_dir = _pick_checkpoint(target)
    framework = _framework_of(ck)
    blob = read_checkpoint(framework, str(ck))  # weights_only / allow_pickle=False: a payload is refused
    meta = _checkpoint_meta(blob, ck)
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{ck}: checkpoint metadata has no config")
    cfg = validate(meta["config"], f"{ck}: config")
    if cfg.framework != framework:
        raise UserError(f"{ck}: a {framework} checkpoint, but its config says framework {cfg.framework!r}")
    classes, pre = _inference_info(meta, run_dir, ck, cfg.tta_flip)
    engine = _build(framework, cfg, pre, len(classes))
    engine.load_weights_only(str(ck), blob)
    return Predictor(framework, classes, pre, "NCHW" if framework == "torch" else "NHWC",
                     _forward_fn(framework, engine.model), ck, cfg, engine.model)


def _load_onnx(path: Path) -> Predictor:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a loadable ONNX model ({first[:200]})") from None
    props = sess.get_modelmeta().custom_metadata_map
    missing = [k for k in ("classes", "preprocess", "layout") if k not in props]
    if missing:
        raise UserError(f"{path}: ONNX metadata lacks {', '.join(missing)} (not exported by alexbench export)")
    try:
        classes = [str(c) for c in json.loads(props["classes"])]
        pre = Preprocess.from_dict(json.loads(props["preprocess"]), f"{path}: metadata preprocess")
    except ValueError as exc:
        raise UserError(f"{path}: ONNX metadata is not valid JSON ({exc})") from None
    name = sess.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0]
    return Predictor("onnx", classes, pre, props["layout"], forward, path, net=sess)


def load_predictor(target: str | Path) -> Predictor:
    """A run folder (its best, else last checkpoint), a checkpoint file, or an exported ``.onnx``."""
    p = Path(target)
    if not p.exists():
        raise UserError(f"{p}: not found")
    if p.is_file() and p.suffix == ".onnx":
        return _load_onnx(p)
    return _load_checkpoint(p)


def ported(pred: Predictor, framework: str) -> Predictor:
    """The same trained weights in the other framework, through the parity porter."""
    from alexbench.models.port import keras_to_torch, torch_to_keras

    if pred.kind == framework:
        return pred
    if pred.kind not in ("torch", "keras"):
        raise UserError(f"{pred.source}: only checkpoints can be ported between frameworks")
    engine = _build(framework, pred.cfg, pred.pre, len(pred.classes))
    if framework == "keras":
        torch_to_keras(pred.net, engine.model)
    else:
        keras_to_torch(pred.net, engine.model)
    return Predictor(framework, pred.classes, pred.pre, "NCHW" if framework == "torch" else "NHWC",
                     _forward_fn(framework, engine.model), pred.source, pred.cfg, engine.model,
                     notes=[f"weights ported {pred.kind} -> {framework} by the parity porter"])


def check_images(pred: Predictor, run_dir: Path | None, n: int = 64) -> tuple[np.ndarray, str]:
    """``n`` real test images at the run's image size: from the run's data source if it loads, else
    from the embedded CIFAR-10 sample (resized to the run's image size if it differs)."""
    from alexbench.data import load_dataset
    from alexbench.evaluate import _run_source

    source = _run_source(run_dir) if run_dir is not None else None
    ds = None
    if source and not str(source).startswith("<"):
        try:
            ds = load_dataset(source)
        except UserError:
            ds = None
    size = tuple(pred.pre.image_size)
    if ds is None or ds.x_test.shape[1:3] != size:
        ds = load_dataset("embedded")
    x = ds.x_test[np.linspace(0, len(ds.x_test) - 1, min(n, len(ds.x_test))).astype(np.int64)]
    if x.shape[1:3] != size:
        x = np.stack([pred.pre.fit_image(im) for im in x])
    return x, ds.name
