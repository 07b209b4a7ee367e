"""One typed config for both engines, loaded from YAML and ``--set key=value`` overrides.

Every key has the same meaning in the PyTorch and the Keras engine. Unknown keys and
out-of-range values are rejected with the field named. The resolved config is saved
with each run (``config.yaml``) and inside each checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alexbench.bounded_yaml import YamlLimit, load_bounded, read_capped
from alexbench.errors import UserError
from alexbench.models.options import ModelOptions

__all__ = ["MAX_SEED", "RESUME_FREE_KEYS", "TrainConfig", "NormalizationConfig", "OptimizerConfig", "ScheduleConfig",
           "AugmentConfig", "FinetuneConfig", "load_yaml", "resolve_config", "apply_overrides", "dump_yaml",
           "config_differences", "explicit_settings"]


MAX_SEED = 2**32 - 1  # NumPy's legacy seeding (scikit-learn's random_state, Keras) takes 32 bits


class _Strict(BaseModel):
    # NaN and infinity are refused in every float field: an infinite lr or warm-up is never meant
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class OptimizerConfig(_Strict):
    """Optimizer. Weight decay is *coupled* (L2 added to the gradient) for ``sgd`` and ``adam``,
    and *decoupled* (``w -= lr * wd * w``, Loshchilov & Hutter) for ``adamw``, identically in
    both engines. It applies to every parameter, BatchNorm and biases included."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, le=100)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, lt=1)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    # torch: the whole update in one fused kernel (torch's ``fused=True``: same update, one pass over
    # the weights); false: torch's default step (a loop over parameters on CPU). Keras: no effect.
    fused: bool = True


class ScheduleConfig(_Strict):
    """Learning-rate schedule, evaluated per step by one pure function shared by both engines."""

    name: Literal["constant", "step", "cosine", "onecycle", "divide_by_epoch"] = "onecycle"
    warmup_epochs: float = Field(0.0, ge=0, le=10000)
    step_epochs: int = Field(30, gt=0)  # for "step": multiply by gamma every step_epochs
    gamma: float = Field(0.1, gt=0, le=1)
    pct_start: float = Field(0.25, gt=0, lt=1)  # for "onecycle": share of steps rising to lr
    div_factor: float = Field(10.0, ge=1)  # onecycle start lr = lr / div_factor
    final_div_factor: float = Field(100.0, ge=1)  # final lr = lr / final_div_factor (onecycle, cosine)
    cycle_epochs: Optional[int] = Field(None, gt=0)  # for "divide_by_epoch": start again every cycle_epochs


class AugmentConfig(_Strict):
    """Training augmentation, computed once per (seed, epoch) in the shared stream."""

    enabled: bool = True
    crop_padding: int = Field(4, ge=0, le=16)
    flip: bool = True


class FinetuneConfig(_Strict):
    """Two-phase fine-tuning of pretrained models: a frozen base (BatchNorm in inference), then all
    layers at ``lr * base_lr_scale``."""

    freeze_epochs: int = Field(0, ge=0)
    unfrozen_lr_scale: float = Field(0.1, gt=0, le=1)


class NormalizationConfig(_Strict):
    """Normalization by its numbers, ``(x - mean) / std`` on 0..255 pixels in ``channel_order``.

    A run writes the numbers it used into its ``config.yaml``; a config that holds them uses
    them as they are (resuming, or ``--config runs/x/config.yaml``) instead of computing them."""

    name: Literal["dataset", "imagenet", "caffe"]  # the preset the numbers came from
    mean: tuple[float, float, float]
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    channel_order: Literal["RGB", "BGR"] = "RGB"


class TrainConfig(_Strict):
    """Defaults are the scratch recipe for ``alexnet_cifar`` (see BENCHMARKS.md for its measured runs)."""

    model: str = "alexnet_cifar"
    framework: Literal["torch", "keras"] = "torch"
    # Keras 3 backend for framework keras (ignored by torch); each backend runs in its own process
    keras_backend: Literal["tensorflow", "jax", "torch"] = "tensorflow"
    # Keras on TensorFlow: BatchNormalization's training step in TensorFlow's fused kernel ("fused") or in
    # Keras 3's own ops ("stock"); the saved layers are stock Keras either way. JAX/torch backends: stock, with a note
    keras_batchnorm: Literal["fused", "stock"] = "fused"
    pretrained: Optional[str] = None  # None, "imagenet", or a weights path
    weights: Optional[str] = None  # offline file for pretrained="imagenet"
    # typed by ``model`` (alexbench.models.options): an unknown option or a bad value is refused by name
    model_options: SerializeAsAny[ModelOptions] = Field(default_factory=dict, validate_default=True)
    epochs: int = Field(24, gt=0, le=10000)
    batch_size: int = Field(256, gt=0, le=65536)
    eval_batch_size: int = Field(500, gt=0, le=65536)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    deterministic: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    max_train_images: Optional[int] = Field(None, gt=0)  # cap the training split (quick runs)
    max_test_images: Optional[int] = Field(None, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    input_size: Optional[int] = Field(None, ge=8, le=1024)  # default: the model's own
    # a preset name or its numbers (as a finished run records them); default: by model/weights
    normalization: Optional[Union[Literal["dataset", "imagenet", "caffe"], NormalizationConfig]] = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    # torch.compile / XLA; None: the faster choice measured per engine and Keras backend (BENCHMARKS.md)
    compile: Optional[bool] = None
    sync_batchnorm: bool = False  # torch with N processes on CUDA: BatchNorm statistics over the global batch
    device: str = "auto"  # torch: auto|cpu|cuda|cuda:N|mps ; keras: auto|cpu|gpu|gpu:N
    # keras: data-parallel over this many local devices in one process (TensorFlow's MirroredStrategy, JAX's
    # keras.distribution.DataParallel): GPUs 0..N-1, or N CPU devices with device: cpu; torch: see --nproc
    devices: int = Field(1, ge=1, le=64)
    threads: Optional[int] = Field(None, gt=0, le=1024)
    checkpoint_minutes: float = Field(10.0, gt=0)
    early_stopping_patience: Optional[int] = Field(None, gt=0)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tta_flip: bool = True  # average logits of the image and its mirror at evaluation
    tensorboard: bool = True  # TensorBoard event files in the run folder
    resource_interval_seconds: float = Field(2.0, ge=0, le=3600)  # resources.csv sampling; 0 turns it off

    @field_validator("model_options", mode="before")
    @classmethod
    def _typed_options(cls, value: Any, info: ValidationInfo) -> Any:
        from alexbench.models import MODELS

        spec = MODELS.get(info.data.get("model"))  # type: ignore[arg-type]
        if isinstance(value, ModelOptions):
            value = value.model_dump()
        if spec is None:  # an unknown model is reported by name where it is used
            if value:
                raise ValueError(f"model {info.data.get('model')!r} is not registered, so its options cannot be "
                                 f"checked; valid models: {', '.join(MODELS)}")
            return ModelOptions()
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of {info.data.get('model')} options, got {type(value).__name__}")
        return spec.options_type.model_validate(value)

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.framework == "torch" and not (self.device in ("auto", "cpu", "mps", "cuda")
                                              or self.device.startswith("cuda:")):
            raise ValueError(f"device: {self.device!r} is not a torch device (auto, cpu, cuda, cuda:N, mps)")
        if self.framework == "keras" and not (self.device in ("auto", "cpu", "gpu") or self.device.startswith("gpu:")):
            raise ValueError(f"device: {self.device!r} is not a Keras device (auto, cpu, gpu, gpu:N)")
        if self.devices > 1:
            self._check_devices()
        from alexbench.models import MODELS, check_input_size

        if self.model in MODELS:  # a size the model's layers cannot take is refused here, not at fc6
            try:
                check_input_size(self.model, self.input_size, self.model_options)
            except UserError as exc:
                raise ValueError(f"input_size: {exc}") from None
        return self

    def _check_devices(self) -> None:
        """What a data-parallel Keras run over ``devices`` local devices cannot take."""
        n = self.devices
        if self.framework == "torch":
            raise ValueError(f"devices: {n}: PyTorch trains on several devices in several processes; "
                             f"use alexbench train --nproc {n} (DistributedDataParallel)")
        if self.keras_backend == "torch":
            raise ValueError(f"devices: {n}: several devices are offered on Keras's TensorFlow backend "
                             "(tf.distribute.MirroredStrategy) and JAX backend (keras.distribution.DataParallel), "
                             "not on 'torch'")
        if self.device.startswith("gpu:"):
            raise ValueError(f"device: {self.device!r} names one GPU; with devices: {n} the run takes GPUs 0 to "
                             f"{n - 1}: use 'gpu' or 'auto'")
        if self.batch_size % n:
            raise ValueError(f"batch_size: {self.batch_size} is the global batch and must divide by the {n} "
                             "devices (each takes an equal share)")


def _union_tag(part: object) -> bool:
    """A loc part pydantic adds for a member of a union (``normalization`` is a name or numbers)."""
    return part == "NormalizationConfig" or str(part).startswith("literal[")


def _pick_error(errors: list) -> dict:
    """The error to report: for ``normalization`` given as a mapping, the one inside the mapping."""
    err = errors[0]
    if len(err.get("loc", ())) > 1 and _union_tag(err["loc"][1]):
        union = [e for e in errors if e.get("loc", ())[:1] == err["loc"][:1]]
        inside = [e for e in union if "NormalizationConfig" in e["loc"] and e["type"] != "model_type"]
        err = dict(inside[0] if inside else union[0])
        if not inside:
            err["msg"] = f"{err['msg']}, or a mapping with name, mean, std and channel_order"
    return err


def _format_error(exc: ValidationError, origin: str, data: Any = None) -> str:
    err = _pick_error(exc.errors())
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__" and not _union_tag(p))
    msg = err.get("msg", "invalid")
    if msg.startswith("Value error, "):  # a ValueError of our own validators: its text says it all
        msg = msg[len("Value error, "):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
        if err["loc"][:1] == ("model_options",) and len(err["loc"]) == 2 and isinstance(data, dict):
            from alexbench.models import MODELS

            spec = MODELS.get(data.get("model", TrainConfig.model_fields["model"].default))
            if spec is not None:
                msg = f"unknown option of {spec.name}; valid options: {', '.join(spec.options) or 'none'}"
    elif "input" in err and err.get("type") not in ("missing", "value_error"):
        msg = f"{msg} (got {err['input']!r})"
    where = f"{origin}: " if origin else ""
    return f"{where}{loc + ': ' if loc else ''}{msg}"


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the safe loader (python tags are refused), within the size,
    depth and alias-expansion bounds of :mod:`alexbench.bounded_yaml`."""
    p = Path(path)
    try:
        text = read_capped(p).decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: not found") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a folder, not a YAML file") from None
    except YamlLimit as exc:
        raise UserError(f"{p}: refused: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: cannot read ({exc})") from None
    try:
        data = load_bounded(text)
    except YamlLimit as exc:
        raise UserError(f"{p}: refused: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise UserError(f"{p}: not a safe YAML config ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def _parse_value(text: str, item: str = "") -> Any:
    try:
        value = load_bounded(text)
    except YamlLimit as exc:
        raise UserError(f"--set {item[:80]}: refused: {exc}") from None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "1e6" as a string; users mean a number
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars) to a nested dict."""
    out = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        parts = [k for k in key.strip().split(".") if k]
        if not parts:
            raise UserError(f"--set {item}: empty key")
        node = out
        for k in parts[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise UserError(f"--set {item}: {k} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(value, item)
    return out


def _deepcopy(d: dict) -> dict:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def deep_merge(base: dict, update: dict) -> dict:
    out = _deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def validate(data: dict, origin: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(exc, origin, data)) from None


def resolve_config(config_file: str | None = None, overrides: list[str] | None = None,
                   base: dict | None = None) -> TrainConfig:
    """Defaults < ``base`` < config file < ``--set`` overrides, validated."""
    data: dict = _deepcopy(base or {})
    origin = "config"
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
        origin = str(config_file)
    if overrides:
        data = apply_overrides(data, overrides)
        origin = f"{origin} + --set" if config_file else "--set"
    return validate(data, origin)


#: keys that say how a run executes, not what it computes: a resume may change them
RESUME_FREE_KEYS = ("device", "devices", "threads", "checkpoint_minutes")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(stored: TrainConfig, asked: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, asked value)`` for every key that differs, except :data:`RESUME_FREE_KEYS`."""
    a, b = _flatten(stored.model_dump(mode="json")), _flatten(asked.model_dump(mode="json"))
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and k not in RESUME_FREE_KEYS]


def explicit_settings(config_file: str | None, overrides: list[str] | None, base: dict | None = None) -> dict:
    """Only what the user set (``base``, the config file, ``--set``), unvalidated and without defaults:
    what a resume compares with the run's stored config."""
    data = _deepcopy(base or {})
    if config_file:
        data = deep_merge(data, load_yaml(config_file))
    return apply_overrides(data, overrides or [])


def dump_yaml(cfg: TrainConfig, header: str | None = None) -> str:
    """A config as saved in a run folder; its first line (``header``, by default
    :data:`alexbench.rundir.CONFIG_HEADER`) marks the file as alexbench's."""
    from alexbench.rundir import CONFIG_HEADER

    return (header or CONFIG_HEADER) + "\n" + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
