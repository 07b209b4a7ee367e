"""Keras 3 engine on the TensorFlow, JAX or torch backend: build, one optimizer step, evaluate, checkpoint.

The backend is the config's ``keras_backend``. Keras reads it once per process, at
import time (see :mod:`alexbench.backend_process` for how another backend gets its own
process). The steps are written once in ``keras.ops`` with a small per-backend gradient
builder (:mod:`alexbench.engines.keras_steps`); the optimizer update is written out
with PyTorch's exact semantics, so identical recipes get identical updates on every
backend and in both frameworks.

Fast paths: the ``mixed_bfloat16`` policy where the CPU has native bf16 (or on GPU);
compiled steps where they are faster (``compile``, default per backend: see
:data:`COMPILE_DEFAULT`); batches prepared in a background thread by the shared stream.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from alexbench import checkpoint as ckpt
from alexbench.atomic import strict_json
from alexbench.config import TrainConfig
from alexbench.data.stream import Normalization
from alexbench.errors import UserError
from alexbench.frameworks import cpu_has_bf16, import_keras

_FORMAT = "alexbench-keras-checkpoint-v1"

#: ``compile`` when the config leaves it unset: the faster choice measured on each backend
#: (BENCHMARKS.md, "Keras backends: compiled or eager steps").
COMPILE_DEFAULT = {"tensorflow": False, "jax": True, "torch": False}


class KerasEngine:
    framework = "keras"

    def __init__(self, cfg: TrainConfig, num_classes: int, norm: Normalization, input_size: int) -> None:
        self.cfg = cfg
        self.backend = cfg.keras_backend
        self.num_classes = num_classes
        self.norm = norm
        self.input_size = input_size
        self.keras = import_keras(cfg.threads, backend=self.backend,
                                  cpu_devices=cfg.devices if cfg.device != "gpu" else 1)
        self.notes: list[str] = []
        # several devices: tf.distribute.MirroredStrategy (TensorFlow), keras.distribution.DataParallel (JAX)
        self.strategy: Any = None
        self.distribution: Any = None
        self.strategy_name: str | None = None  # metrics.json's strategy: "mirrored" or "data_parallel"
        self.replicas = cfg.devices
        # a config value: "cpu" or "gpu:N" ("gpu" for GPUs 0 to devices-1)
        self.device = self._pick_devices(cfg.device, cfg.devices) if cfg.devices > 1 else self._pick_device(cfg.device)
        # the name keras.device takes: Keras's torch backend moves each new variable to the scope's
        # device, and "cpu:0" is not torch's name for the CPU (every variable would be copied)
        self.keras_device = "cpu:0" if self.device == "cpu" and self.backend != "torch" else self.device
        if self.device == "gpu":
            self.keras_device = "gpu:0"  # evaluation runs on the first of the devices
        self.precision = self._pick_precision(cfg.precision)
        self.compiled = COMPILE_DEFAULT[self.backend] if cfg.compile is None else bool(cfg.compile)
        if self.compiled and cfg.deterministic and self.backend != "jax":
            # TensorFlow's op determinism makes XLA's conversion fail; torch.compile is skipped as in the torch engine
            self.compiled = False
            self.notes.append(f"compile: off on {self.backend}, because deterministic is on")
        if self.compiled and self.strategy is not None:
            # XLA cannot reach the replicas' variables from its compiled step (tested on logical CPU devices)
            self.compiled = False
            self.notes.append(f"compile: off with devices: {self.replicas} (XLA inside MirroredStrategy replicas)")
        self.model: Any = None  # keras.Model after build(); Keras is not type-checked here
        self.batchnorm: str | None = None  # how BatchNorm trains, set by build() (keras_batchnorm.apply)

    # -- device and dtype, chosen in one place -------------------------------------------------
    def _gpu_count(self) -> int:
        if self.backend == "tensorflow":
            import tensorflow as tf

            return len(tf.config.list_physical_devices("GPU"))
        if self.backend == "jax":
            import jax

            return sum(d.platform == "gpu" for d in jax.devices())
        import torch

        return torch.cuda.device_count()

    def _pick_device(self, want: str) -> str:
        """``cpu`` or ``gpu:N``."""
        gpus = self._gpu_count() if want != "cpu" else 0
        cpu = "cpu"
        if want == "auto":
            return "gpu:0" if gpus else cpu
        if want.startswith("gpu"):
            idx = int(want.split(":")[1]) if ":" in want else 0
            if idx >= gpus:
                raise UserError(f"device: {want!r} asked for but Keras ({self.backend}) sees {gpus} GPU(s)")
            return f"gpu:{idx}"
        return cpu

    def _pick_devices(self, want: str, n: int) -> str:
        """Several devices in this process (TensorFlow and JAX, see config): ``gpu`` for GPUs 0..n-1, or ``cpu``
        split into ``n`` logical CPU devices (no faster than one: for trying the data-parallel path)."""
        if self.backend == "jax":
            return self._pick_jax_devices(want, n)
        if self.backend != "tensorflow":  # the config refuses it; a resume's devices come unvalidated
            raise UserError(f"devices: {n}: several devices are offered on Keras's TensorFlow and JAX backends only")
        import tensorflow as tf

        gpus = self._gpu_count() if want != "cpu" else 0
        if want == "gpu" and gpus < n:
            raise UserError(f"devices: {n} GPUs asked for but TensorFlow sees {gpus}")
        if want != "cpu" and gpus >= n:
            names = [f"/gpu:{i}" for i in range(n)]
        else:
            if want == "auto" and gpus:
                raise UserError(f"devices: {n} asked for but TensorFlow sees {gpus} GPU(s); set device: cpu "
                                f"for {n} logical CPU devices")
            split_cpu(n)
            names = [f"/cpu:{i}" for i in range(n)]
        self.strategy = tf.distribute.MirroredStrategy(names)
        self.strategy_name = "mirrored"
        self.notes.append(f"devices: {n} replicas in one process (tf.distribute.MirroredStrategy over "
                          f"{', '.join(names)}), {self.cfg.batch_size // n} images each per step; gradients "
                          "averaged over the replicas, one update; BatchNorm statistics per replica")
        return "gpu" if names[0].startswith("/gpu") else "cpu"

    def _pick_jax_devices(self, want: str, n: int) -> str:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"] if want != "cpu" else []
        if want == "gpu" and len(gpus) < n:
            raise UserError(f"devices: {n} GPUs asked for but JAX sees {len(gpus)}")
        if want == "auto" and 0 < len(gpus) < n:
            raise UserError(f"devices: {n} asked for but JAX sees {len(gpus)} GPU(s); set device: cpu "
                            f"for {n} CPU devices")
        devs = gpus[:n] if gpus else jax.devices("cpu")[:n]
        if len(devs) < n:
            raise UserError(f"devices: {n} CPU devices need a fresh process: JAX has already started with {len(devs)}")
        self.distribution = self.keras.distribution.DataParallel(devices=devs)
        self.strategy_name = "data_parallel"
        kind = "gpu" if gpus else "cpu"
        self.notes.append(f"devices: {n} replicas in one process (keras.distribution.DataParallel over "
                          f"{', '.join(f'{kind}:{d.id}' for d in devs)}), {self.cfg.batch_size // n} images each per "
                          "step; the step runs SPMD over them (XLA all-reduces the gradients); BatchNorm statistics "
                          "over the global batch")
        return kind

    def _placement(self) -> AbstractContextManager:
        """Where variables are made and steps run: the strategy's or distribution's scope, or the one device."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return self.keras.device(self.keras_device)

    def _pick_precision(self, want: str) -> str:
        on_gpu = self.device.startswith("gpu")
        bf16_ok = on_gpu or cpu_has_bf16()
        if want == "auto":
            if not bf16_ok:
                self.notes.append("precision auto: fp32, because this CPU has no native bf16 (AVX512-BF16/AMX)")
            return "bf16" if bf16_ok else "fp32"
        if want == "bf16" and not bf16_ok:
            raise UserError("precision: bf16 asked for but this CPU has no native bf16 (AVX512-BF16/AMX); use fp32")
        if want == "fp16" and not on_gpu:
            raise UserError("precision: fp16 is only supported on GPU; use bf16 or fp32")
        return want

    # -- build -------------------------------------------------------------------------------
    def build(self) -> None:
        keras, cfg = self.keras, self.cfg
        from alexbench.models import create_model

        if cfg.deterministic:
            self._set_deterministic()
        keras.utils.set_random_seed(cfg.seed)
        policy = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[self.precision]
        keras.mixed_precision.set_global_policy(policy)
        try:
            with self._placement():
                self.model = create_model(cfg.model, "keras", num_classes=self.num_classes,
                                          pretrained=cfg.pretrained, weights=cfg.weights,
                                          input_size=self.input_size, **cfg.model_options)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        from alexbench.engines.keras_batchnorm import apply

        self.batchnorm = apply(self.model, cfg.keras_batchnorm, self.backend, self.notes)
        with self._placement():
            self.mean = keras.ops.convert_to_tensor(np.asarray(self.norm.mean, np.float32))
            self.std = keras.ops.convert_to_tensor(np.asarray(self.norm.std, np.float32))
            # optimizer state, keyed by variable path so freezing/unfreezing keeps it
            n = 2 if cfg.optimizer.name in ("adam", "adamw") else (1 if cfg.optimizer.momentum > 0 else 0)
            self.slots: dict[str, list] = {
                v.path: [keras.Variable(np.zeros(v.shape, v.dtype), trainable=False, name=f"slot{j}")
                         for j in range(n)]
                for v in self.model.trainable_variables}
        self.step_count = 0  # optimizer steps taken (Adam's bias correction); saved as opt_t
        self.loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
        self.loss_scale = 2.0 ** 12 if self.precision == "fp16" else 1.0
        self._make_fns()

    def _set_deterministic(self) -> None:
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        elif self.backend == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=False)
        # JAX on CPU: XLA's CPU kernels are deterministic already

    def _make_fns(self) -> None:
        from alexbench.engines.keras_steps import BUILDERS, mirrored_steps

        self._train_fn, self._eval_fn = (mirrored_steps if self.strategy is not None else BUILDERS[self.backend])(self)

    def params(self) -> tuple[int, int]:
        from alexbench.models import count_params

        return count_params(self.model, "keras")

    def set_base_trainable(self, trainable: bool) -> None:
        from alexbench.models import head_layer_names, set_base_trainable

        # optimizer slots exist for every variable: the model is built unfrozen
        set_base_trainable(self.model, "keras", trainable, head_layer_names(self.cfg.model))
        self._make_fns()  # the trainable set changed: retrace

    def train_mode(self) -> None:
        """Keras picks train/inference behaviour per call (training=True/False); nothing to do."""

    # -- steps -------------------------------------------------------------------------------
    def train_step(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> tuple[float, int]:
        with self._placement():
            loss, correct, applied = self._train_fn(xb, yb.astype(np.int32), np.float32(lr),
                                                    np.float32(self.step_count + 1))
        if applied is None or bool(applied):  # a skipped fp16 step does not count (as torch's GradScaler)
            self.step_count += 1
        return float(loss), int(correct)

    def predict(self, batches) -> tuple[np.ndarray, float]:  # noqa: ANN001
        ops = self.keras.ops
        out, loss_sum, n = [], 0.0, 0
        with self.keras.device(self.keras_device):
            for xb, yb in batches:
                probs, ls = self._eval_fn(xb, yb.astype(np.int32))
                out.append(np.asarray(ops.convert_to_numpy(probs), np.float32))
                loss_sum += float(ls)
                n += len(yb)
        probs = np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)
        return probs, loss_sum / max(n, 1)

    # -- checkpoints: a plain .npz (no pickle), written by the caller atomically ---------------
    def _state_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for i, v in enumerate(self.model.variables):
            arrays[f"model/{i:04d}"] = self._numpy(v)
        for path, slots in self.slots.items():
            for j, s in enumerate(slots):
                arrays[f"opt/{path}/{j}"] = self._numpy(s)
        arrays["opt_t"] = np.asarray(self.step_count, np.int64)
        if self.backend == "torch":
            # Keras's torch backend draws unseeded dropout masks from torch's global generator
            import torch

            arrays["rng/torch"] = torch.get_rng_state().numpy()
            if self.device.startswith("gpu"):
                arrays["rng/cuda"] = torch.cuda.get_rng_state(int(self.device.split(":")[1])).numpy()
        return arrays

    def _numpy(self, v) -> np.ndarray:  # noqa: ANN001 - a keras.Variable
        """A variable's value as numpy, by each backend's own route (the generic one warns under numpy 2)."""
        if self.backend == "tensorflow":
            return np.asarray(v.numpy())
        if self.backend == "torch":
            return v.value.detach().cpu().numpy()
        return np.asarray(v.value)

    def save(self, path: str, meta: dict) -> None:
        arrays = self._state_arrays()
        names = [v.path for v in self.model.variables]
        with open(path, "wb") as fh:
            np.savez(fh, format=np.array(_FORMAT), variable_paths=np.array(names),
                     meta_json=np.array(strict_json(meta, indent=None)), **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle

    def _read(self, path: str) -> dict:
        return read_checkpoint(path)

    def _load_model_vars(self, path: str, data: dict) -> None:
        names = [str(s) for s in data["variable_paths"]]
        own = self.model.variables
        if len(names) != len(own):
            raise UserError(f"{path}: checkpoint has {len(names)} variables, model has {len(own)} "
                            "(wrong architecture?)")
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
        slots = [(s, data[f"opt/{p}/{j}"], f"opt/{p}/{j}") for p, ss in self.slots.items() for j, s in enumerate(ss)
                 if f"opt/{p}/{j}" in data]
        for s, arr, key in slots:  # all checked before anything is assigned
            if tuple(arr.shape) != tuple(s.shape) or arr.dtype.kind != "f":
                raise UserError(f"{path}: {key}: expected float values of shape {tuple(s.shape)} "
                                f"(got {arr.dtype} of shape {tuple(arr.shape)})")
        self._load_model_vars(path, data)
        for s, arr, _ in slots:
            s.assign(arr)
        self.step_count = int(data["opt_t"])
        rng = data.get("rng/torch")
        if rng is not None and self.backend == "torch":
            import torch

            if rng.dtype != np.uint8 or rng.ndim != 1:
                raise UserError(f"{path}: rng/torch: expected torch's generator state (uint8 bytes)")
            torch.set_rng_state(torch.from_numpy(rng.copy()))
            cuda = data.get("rng/cuda")
            if cuda is not None and self.device.startswith("gpu"):
                torch.cuda.set_rng_state(torch.from_numpy(cuda.copy()), int(self.device.split(":")[1]))
        return meta

    def load_weights_only(self, path: str, data: dict | None = None) -> dict:
        """Load the model weights only; ``data`` is the file's content if :func:`read_checkpoint` read it already."""
        data = self._read(path) if data is None else data
        self._load_model_vars(path, data)
        return data["meta"]


def split_cpu(n: int) -> None:
    """Make TensorFlow show its CPU as ``n`` logical devices; this must come before TensorFlow starts its devices."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    have = tf.config.get_logical_device_configuration(cpu)
    if have is not None and len(have) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        count = len(tf.config.list_logical_devices("CPU"))
        raise UserError(f"devices: {n} logical CPU devices need a fresh process: TensorFlow has already started "
                        f"{count} in this one") from None


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
    except Exception as exc:  # noqa: BLE001 - corrupt zip, pickled object arrays
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
