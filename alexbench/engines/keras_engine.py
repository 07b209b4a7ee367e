"""Keras 3 (TensorFlow backend) engine: build, one optimizer step, evaluate, checkpoint.

The optimizer update is written out here, with PyTorch's exact semantics (SGD with
the momentum buffer ``b = m*b + g``, Adam with torch's epsilon placement, AdamW's
decoupled decay), rather than taken from ``keras.optimizers``: Keras's SGD folds the
learning rate into its velocity, which differs from torch's whenever the learning
rate changes, i.e. under every schedule. Identical recipes need identical updates.

Fast paths: the ``mixed_bfloat16`` policy where the CPU has native bf16 (or on GPU),
a traced ``tf.function`` step, optional XLA (``compile: true``), and batches prepared
in a background thread by the shared stream.
"""

from __future__ import annotations


import numpy as np

from alexbench import checkpoint as ckpt
from alexbench.atomic import strict_json
from alexbench.config import TrainConfig
from alexbench.data.stream import Normalization
from alexbench.errors import UserError
from alexbench.frameworks import cpu_has_bf16, import_keras

_FORMAT = "alexbench-keras-checkpoint-v1"


class KerasEngine:
    framework = "keras"

    def __init__(self, cfg: TrainConfig, num_classes: int, norm: Normalization, input_size: int) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.norm = norm
        self.input_size = input_size
        self.keras = import_keras(cfg.threads)
        import tensorflow as tf

        self.tf = tf
        self.device = self._pick_device(cfg.device)
        self.precision = self._pick_precision(cfg.precision)
        self.model = None

    def _pick_device(self, want: str) -> str:
        gpus = self.tf.config.list_physical_devices("GPU")
        if want == "auto":
            return "/GPU:0" if gpus else "/CPU:0"
        if want.startswith("gpu"):
            idx = int(want.split(":")[1]) if ":" in want else 0
            if idx >= len(gpus):
                raise UserError(f"device: {want!r} asked for but TensorFlow sees {len(gpus)} GPU(s)")
            return f"/GPU:{idx}"
        return "/CPU:0"

    def _pick_precision(self, want: str) -> str:
        on_gpu = self.device.startswith("/GPU")
        bf16_ok = on_gpu or cpu_has_bf16()
        if want == "auto":
            return "bf16" if bf16_ok else "fp32"
        if want == "bf16" and not bf16_ok:
            raise UserError("precision: bf16 asked for but this CPU has no native bf16 (AVX512-BF16/AMX); use fp32")
        if want == "fp16" and not on_gpu:
            raise UserError("precision: fp16 is only supported on GPU; use bf16 or fp32")
        return want

    # -- build -------------------------------------------------------------------------------
    def build(self) -> None:
        keras, tf, cfg = self.keras, self.tf, self.cfg
        from alexbench.models import create_model

        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(cfg.seed)
        policy = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[self.precision]
        keras.mixed_precision.set_global_policy(policy)
        try:
            with tf.device(self.device):
                self.model = create_model(cfg.model, "keras", num_classes=self.num_classes,
                                          pretrained=cfg.pretrained, weights=cfg.weights,
                                          input_size=self.input_size, **cfg.model_options)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.mean = tf.constant(self.norm.mean, tf.float32)
        self.std = tf.constant(self.norm.std, tf.float32)
        o = cfg.optimizer
        # optimizer state, keyed by variable path so freezing/unfreezing keeps it
        self._slots: dict[str, list] = {}
        with tf.device(self.device):
            for v in self.model.trainable_variables:
                n = 2 if o.name in ("adam", "adamw") else 1
                self._slots[v.path] = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for _ in range(n)]
            self._t = tf.Variable(0, dtype=tf.int64, trainable=False)
            self._lr = tf.Variable(o.lr, dtype=tf.float32, trainable=False)
        self._loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
        self._loss_scale = 2.0 ** 12 if self.precision == "fp16" else 1.0
        self._make_fns()

    def _make_fns(self) -> None:
        tf = self.tf
        jit = bool(self.cfg.compile)
        self._train_fn = tf.function(self._train_step, jit_compile=jit, reduce_retracing=True)
        self._eval_fn = tf.function(self._eval_step, jit_compile=jit, reduce_retracing=True)

    def params(self) -> tuple[int, int]:
        from alexbench.models import count_params

        return count_params(self.model, "keras")

    def set_base_trainable(self, trainable: bool) -> None:
        from alexbench.models import head_layer_names, set_base_trainable

        set_base_trainable(self.model, "keras", trainable, head_layer_names(self.cfg.model))
        self._make_fns()  # the trainable set changed: retrace

    def train_mode(self) -> None:
        """Keras picks train/inference behaviour per call (training=True/False); nothing to do."""

    # -- steps -------------------------------------------------------------------------------
    def _prep(self, x_u8):  # noqa: ANN001, ANN202
        tf = self.tf
        x = tf.cast(x_u8, tf.float32)
        if self.norm.bgr:
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        if x.shape[1] != self.input_size or x.shape[2] != self.input_size:
            # whole-batch bilinear resize, half-pixel centres, no antialias (== torch interpolate bilinear)
            x = tf.image.resize(x, (self.input_size, self.input_size), method="bilinear", antialias=False)
        return x

    def _train_step(self, x_u8, y):  # noqa: ANN001, ANN202
        tf = self.tf
        model = self.model
        tvars = model.trainable_variables
        x = self._prep(x_u8)
        y_onehot = tf.one_hot(y, self.num_classes)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = self._loss(y_onehot, logits)
            scaled = loss * self._loss_scale
        grads = tape.gradient(scaled, tvars)
        if self._loss_scale != 1.0:
            grads = [g / self._loss_scale for g in grads]
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            # as torch's GradScaler: an overflowed fp16 step changes nothing (weights, momentum, step count)
            tf.cond(finite, lambda: self._apply(tvars, grads), lambda: tf.constant(False))
        else:
            self._apply(tvars, grads)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int64), y), tf.int64))
        return loss, correct

    def _apply(self, tvars, grads):  # noqa: ANN001, ANN202
        """The optimizer update, torch's semantics; returns True (a value for tf.cond)."""
        tf, o = self.tf, self.cfg.optimizer
        lr = self._lr
        self._t.assign_add(1)
        t = tf.cast(self._t, tf.float32)
        for v, g in zip(tvars, grads):
            g = tf.cast(g, v.dtype)
            slots = self._slots[v.path]
            if o.name == "sgd":
                if o.weight_decay:
                    g = g + o.weight_decay * v  # coupled L2, as torch.optim.SGD
                if o.momentum > 0:
                    b = slots[0]
                    # torch initialises the buffer to g on the first step: m*0 + g is the same
                    b.assign(o.momentum * b + g)
                    d = g + o.momentum * b if o.nesterov else b
                else:
                    d = g
                v.assign_sub(lr * d)
            else:
                m, s = slots
                if o.name == "adamw" and o.weight_decay:
                    v.assign(v * (1.0 - lr * o.weight_decay))  # decoupled, as torch.optim.AdamW
                elif o.weight_decay:
                    g = g + o.weight_decay * v  # coupled L2, as torch.optim.Adam
                b1, b2 = o.betas
                m.assign(b1 * m + (1 - b1) * g)
                s.assign(b2 * s + (1 - b2) * tf.square(g))
                bc1 = 1 - tf.pow(b1, t)
                bc2 = 1 - tf.pow(b2, t)
                denom = tf.sqrt(s) / tf.sqrt(bc2) + o.eps
                v.assign_sub((lr / bc1) * m / denom)
        return tf.constant(True)

    def _eval_step(self, x_u8, y):  # noqa: ANN001, ANN202
        tf = self.tf
        x = self._prep(x_u8)
        logits = tf.cast(self.model(x, training=False), tf.float32)
        if self.cfg.tta_flip:
            logits = 0.5 * (logits + tf.cast(self.model(x[:, :, ::-1, :], training=False), tf.float32))
        loss_sum = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        return tf.nn.softmax(logits, axis=1), loss_sum

    def train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> tuple[float, int]:
        self._lr.assign(lr)
        with self.tf.device(self.device):
            loss, correct = self._train_fn(xb, yb)
        return float(loss), int(correct)

    def predict(self, batches) -> tuple[np.ndarray, float]:  # noqa: ANN001
        out, loss_sum, n = [], 0.0, 0
        with self.tf.device(self.device):
            for xb, yb in batches:
                probs, ls = self._eval_fn(xb, yb)
                out.append(probs.numpy())
                loss_sum += float(ls)
                n += len(yb)
        probs = np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)
        return probs, loss_sum / max(n, 1)

    # -- checkpoints: a plain .npz (no pickle), written by the caller atomically ---------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for i, v in enumerate(self.model.variables):
            arrays[f"model/{i:04d}"] = np.asarray(v.numpy())
        for path, slots in self._slots.items():
            for j, s in enumerate(slots):
                arrays[f"opt/{path}/{j}"] = np.asarray(s.numpy())
        arrays["opt_t"] = np.asarray(self._t.numpy())
        return arrays

    def save(self, path: str, meta: dict) -> None:
        arrays = self._state_arrays()
        names = [v.path for v in self.model.variables]
        with open(path, "wb") as fh:
            np.savez(fh, format=np.array(_FORMAT), variable_paths=np.array(names),
                     meta_json=np.array(strict_json(meta, indent=None)), **arrays)

    def _read(self, path: str) -> dict:
        return read_checkpoint(path)

    def _load_model_vars(self, path: str, data: dict) -> None:
        names = [str(s) for s in data["variable_paths"]]
        own = self.model.variables
        if len(names) != len(own):
            raise UserError(f"{path}: checkpoint has {len(names)} variables, model has {len(own)} (wrong architecture?)")
        for i, v in enumerate(own):
            arr = data[f"model/{i:04d}"]
            if tuple(arr.shape) != tuple(v.shape):
                raise UserError(f"{path}: layer {v.path!r} has shape {tuple(arr.shape)} in the checkpoint, "
                                f"model expects {tuple(v.shape)}")
            ckpt.check_weight_kind(path, f"layer {v.path!r}", arr, v.dtype)
        for i, v in enumerate(own):
            v.assign(data[f"model/{i:04d}"])

    def load(self, path: str) -> dict:
        data = self._read(path)
        meta = ckpt.resume_meta(path, data["meta"])
        slots = [(s, data[f"opt/{p}/{j}"], f"opt/{p}/{j}") for p, ss in self._slots.items() for j, s in enumerate(ss)
                 if f"opt/{p}/{j}" in data]
        for s, arr, key in slots:  # all checked before anything is assigned
            if tuple(arr.shape) != tuple(s.shape) or arr.dtype.kind != "f":
                raise UserError(f"{path}: {key}: expected float values of shape {tuple(s.shape)} "
                                f"(got {arr.dtype} of shape {tuple(arr.shape)})")
        self._load_model_vars(path, data)
        for s, arr, _ in slots:
            s.assign(arr)
        self._t.assign(int(data["opt_t"]))
        return meta

    def load_weights_only(self, path: str, data: dict | None = None) -> dict:
        """Load the model weights only; ``data`` is the file's content if :func:`read_checkpoint` read it already."""
        data = self._read(path) if data is None else data
        self._load_model_vars(path, data)
        return data["meta"]


def read_checkpoint(path: str) -> dict:
    """Read an alexbench keras checkpoint (an ``.npz`` read with ``allow_pickle=False``) and check it all.

    Returns its arrays by name, plus ``meta`` (the parsed metadata). Refused in one line:
    members that expand far beyond the file, a missing or malformed part, and weights
    that are not finite floating point (or integer counters).
    """
    ckpt.check_expansion(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # corrupt zip, pickled object arrays
        raise UserError(f"{path}: not a loadable alexbench keras checkpoint ({str(exc)[:200]})") from None
    fmt = data.get("format")
    if fmt is None or fmt.shape != () or str(fmt) != _FORMAT:
        raise UserError(f"{path}: not an alexbench keras checkpoint")
    paths, meta, t = data.get("variable_paths"), data.get("meta_json"), data.get("opt_t")
    if paths is None or paths.ndim != 1 or paths.dtype.kind != "U":
        raise UserError(f"{path}: variable_paths: missing or not a list of names")
    if meta is None or meta.shape != () or meta.dtype.kind != "U":
        raise UserError(f"{path}: meta_json: missing or not JSON text")
    if t is None or t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
        raise UserError(f"{path}: opt_t: missing or not a step count")
    for i in range(len(paths)):
        if f"model/{i:04d}" not in data:
            raise UserError(f"{path}: model/{i:04d}: missing ({len(paths)} variables are listed)")
    for key, arr in data.items():
        if key.startswith(("model/", "opt/")):
            ckpt.check_weight(path, key, arr)
    data["meta"] = ckpt.parse_meta(path, str(meta))
    return data
