"""The model registry: one name, two builders (PyTorch and Keras), proven equal by parity.

``MODELS`` is a plain dict ``name -> ModelSpec``. Each model has one file per framework,
``<name>_torch.py`` and ``<name>_keras.py``, with a builder function called ``<name>``
and the same layer names on both sides. Importing this package imports neither
framework. The builders are imported when a model is created.

Contracts:
- A torch model takes float NCHW input, normalised, at ``input_size``. A Keras model
  takes float NHWC input. Both return logits (no softmax).
- ``create_model(name, framework, num_classes, pretrained=None|"imagenet"|PATH,
  weights=None|PATH, input_size=None, **options)``; the options are typed per model
  (:mod:`alexbench.models.options`).
- Input sizes: ``ModelSpec.geometry`` describes the layers that change the map's side;
  ``accepted_sizes`` and ``check_input_size`` say which sizes a model can take (see
  ``geometry.py``). ``create_model`` refuses any other size with a UserError.
- ``count_params``, ``flops_per_image``: equal across frameworks (``parity`` checks).
- Fine-tuning: ``head_layer_names``, ``set_base_trainable``, ``torch_train_mode``,
  ``reset_classifier``.

Preprocessing names used in ``ModelSpec.default_norm`` / ``pretrained_norm``:
- ``"dataset"``: per-channel mean/std of the training set.
- ``"imagenet"``: RGB in [0, 1], minus mean (0.485, 0.456, 0.406), divided by
  std (0.229, 0.224, 0.225). This is what torchvision's weights expect.
- ``"caffe"``: RGB to BGR on the 0-255 scale, minus (103.939, 116.779, 123.68),
  with no std. This is what keras.applications' VGG16 weights expect
  (``keras.applications.vgg16.preprocess_input``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from alexbench.errors import UserError
from alexbench.models.finetune import reset_classifier, set_base_trainable, torch_train_mode
from alexbench.models.flops import flops_per_image
from alexbench.models.geometry import Geometry, alexnet_layout, cifar_layout, describe_sizes, vgg16_layout
from alexbench.models.options import (
    AlexNet2012Options,
    AlexNetBNOptions,
    AlexNetCifarOptions,
    AlexNetOptions,
    ModelOptions,
    VGG16Options,
)
from alexbench.models.pretrained import WeightsUnavailable

FRAMEWORKS: tuple[str, ...] = ("torch", "keras")

__all__ = [
    "FRAMEWORKS", "MODELS", "ModelSpec", "WeightsUnavailable", "accepted_sizes", "check_input_size", "check_options",
    "count_params", "create_model", "flops_per_image", "get_spec", "head_layer_names", "reset_classifier",
    "resolve_options", "set_base_trainable", "torch_train_mode",
]


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of alexbench needs to know about one registered model.

    ``options_type`` is the model's typed options (:mod:`alexbench.models.options`);
    ``options`` maps each of them to its default. ``head`` lists the classifier
    layers, which stay trainable when the base is frozen; the last of them is the
    one ``reset_classifier`` replaces. ``parity_variants`` are the option sets that
    ``alexbench parity`` checks, one for each distinct layer structure.
    ``geometry(options)`` gives the layers that change the map's side and what the
    classifier needs (``options`` are the model's typed options).
    """

    name: str
    input_size: int
    frameworks: tuple[str, ...]
    default_norm: str
    pretrained_norm: dict[str, str]
    description: str
    options_type: type[ModelOptions] = ModelOptions
    head: tuple[str, ...] = ("fc6", "fc7", "fc8")
    parity_variants: tuple[dict[str, Any], ...] = ({},)
    geometry: Callable[[Any], Geometry] = field(default=lambda options: Geometry(()))

    @property
    def options(self) -> dict[str, Any]:
        """Each option's default."""
        return self.options_type().model_dump()

    @property
    def classifier(self) -> str:
        """Name of the final (logits) layer."""
        return self.head[-1]

    def builder(self, framework: str) -> Callable[..., Any]:
        """The builder function in ``alexbench/models/<name>_<framework>.py``."""
        module = importlib.import_module(f"alexbench.models.{self.name}_{framework}")
        return getattr(module, self.name)


MODELS: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    MODELS[spec.name] = spec


_register(ModelSpec(
    name="alexnet",
    input_size=224,
    frameworks=FRAMEWORKS,
    default_norm="imagenet",
    pretrained_norm={"torch": "imagenet", "keras": "imagenet"},
    description="torchvision's AlexNet: conv 64-192-384-256-256, avgpool 6x6, fc 4096-4096; "
                "ImageNet weights (Keras: ported from torchvision)",
    options_type=AlexNetOptions,
    geometry=lambda options: Geometry(alexnet_layout(conv1_padding=2)),  # adaptive avgpool: any map
))
_register(ModelSpec(
    name="alexnet2012",
    input_size=227,
    frameworks=FRAMEWORKS,
    default_norm="imagenet",
    pretrained_norm={},
    description="Krizhevsky et al. 2012, one tower: conv 96-256-384-384-256, LRN after conv1/conv2, "
                "overlapping pools; norm=lrn|batch|none",
    options_type=AlexNet2012Options,
    parity_variants=({"norm": "lrn"}, {"norm": "batch"}, {"norm": "none"}),
    geometry=lambda options: Geometry(alexnet_layout(conv1_padding=0), classifier_map=6, last="pool5"),
))
_register(ModelSpec(
    name="alexnet_bn",
    input_size=224,
    frameworks=FRAMEWORKS,
    default_norm="imagenet",
    pretrained_norm={},
    description="AlexNet as tutorials and notebooks write it: conv 96-256-384-384-256 (11x11/4 unpadded), "
                "BatchNorm after every conv, fc6 sized from the input; pool_padding=valid|same",
    options_type=AlexNetBNOptions,
    parity_variants=({"pool_padding": "valid"}, {"pool_padding": "same"}),
    geometry=lambda options: Geometry(alexnet_layout(
        conv1_padding=0, pool_padding="same" if options.pool_padding == "same" else 0)),
))
_register(ModelSpec(
    name="alexnet_cifar",
    input_size=32,
    frameworks=FRAMEWORKS,
    default_norm="dataset",
    pretrained_norm={},
    description="AlexNet for 32x32 without upscaling: 3x3 stride-1 conv+BN 64-192-384-256-256, "
                "3 pools, fc 1024-1024; width, dropout, norm=batch|none",
    options_type=AlexNetCifarOptions,
    parity_variants=({"norm": "batch"}, {"norm": "none"}),
    geometry=lambda options: Geometry(cifar_layout(), classifier_map=4, last="pool5"),
))
_register(ModelSpec(
    name="vgg16",
    input_size=224,
    frameworks=FRAMEWORKS,
    default_norm="imagenet",
    pretrained_norm={"torch": "imagenet", "keras": "caffe"},
    description="VGG-16 in torchvision / keras.applications layout; ImageNet weights "
                "(torch: torchvision, Keras: keras.applications, convolutions only)",
    options_type=VGG16Options,
    head=("fc1", "fc2", "predictions"),
    geometry=lambda options: Geometry(vgg16_layout()),  # adaptive avgpool: any map
))


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``, or a UserError that lists the valid names."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}") from None


def check_options(name: str, options: Any) -> ModelOptions:
    """``options`` (a dict or an options object) as ``name``'s typed options, or a UserError
    naming the model and the option: ``model alexnet_cifar: option width: ...``."""
    spec = get_spec(name)
    if isinstance(options, spec.options_type):
        return options
    try:
        return spec.options_type.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            valid = ", ".join(spec.options) or "none"
            raise UserError(f"model {name}: unknown option {key!r}; valid options: {valid}") from None
        raise UserError(f"model {name}: option {key}: {err.get('msg', 'invalid')} (got {err.get('input')!r})") \
            from None


def resolve_options(name: str, options: Any) -> dict[str, Any]:
    """Check options for ``name`` (see :func:`check_options`) and return the builder's keyword arguments.

    ``width`` (alexnet_cifar) becomes ``channels``: each of 64-192-384-256-256 times
    width, rounded to a multiple of 8.
    """
    return check_options(name, options).builder_kwargs()


def accepted_sizes(name: str, options: Any = None) -> list[int]:
    """Every input size (within the config's 8-1024 px) that model ``name`` with ``options`` can take."""
    return get_spec(name).geometry(check_options(name, options or {})).accepted_sizes()


def check_input_size(name: str, size: int | None, options: Any = None) -> int:
    """``size`` (or the model's own when None) if model ``name`` can take it; else a UserError.

    The error names the model, the size and the sizes the model accepts, e.g.
    ``alexnet2012 cannot take 224 px (its classifier is built for a 6x6 map after pool5,
    and 224 px gives 5x5); it takes 227-258 px``.
    """
    spec = get_spec(name)
    size = spec.input_size if size is None else int(size)
    opts = check_options(name, options or {})
    geometry = spec.geometry(opts)
    if not geometry.accepts(size):
        shown = f" (pool_padding={getattr(opts, 'pool_padding', None)})" if "pool_padding" in spec.options else ""
        raise UserError(f"{name}{shown} cannot take {size} px ({geometry.why_not(size)}); "
                        f"it takes {describe_sizes(geometry.accepted_sizes())}")
    return size


def create_model(name: str, framework: str, num_classes: int = 10, pretrained: str | None = None,
                 weights: str | None = None, input_size: int | None = None, **options: Any) -> Any:
    """Build a registered model: a torch ``nn.Module`` or a ``keras.Model`` that returns logits.

    ``pretrained`` is None (fresh init), ``"imagenet"`` (official weights through
    torchvision's or keras's cache, or from the offline file ``weights``), or a path to a
    weights file for this architecture. When the file's classifier has a different
    number of classes, the classifier is left freshly initialised for ``num_classes``.
    ``options`` are the model's options (see ``MODELS[name].options``). ``input_size``
    (default: the model's own) must be one the model accepts (:func:`check_input_size`);
    Keras models are built for it, and it sizes ``alexnet_bn``'s fc6.
    """
    spec = get_spec(name)
    if framework not in spec.frameworks:
        raise UserError(f"model {name}: unknown framework {framework!r}; valid: {', '.join(spec.frameworks)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"model {name}: num_classes must be a positive integer (got {num_classes!r})")
    kwargs = resolve_options(name, options)
    size = check_input_size(name, input_size, options)

    def build(fw: str) -> Any:
        return spec.builder(fw)(num_classes=num_classes, input_size=size, **kwargs)

    if pretrained is None and weights is None:
        return build(framework)
    from alexbench.models import pretrained as _pretrained

    return _pretrained.load_pretrained(spec, framework, pretrained, weights, build)


def count_params(model: Any, framework: str) -> tuple[int, int]:
    """(trainable, total) parameter counts, defined the same way for both frameworks.

    The total includes BatchNorm running mean and variance. Keras counts them as
    non-trainable weights, so the torch count adds the matching buffers
    (``num_batches_tracked`` is bookkeeping and is not counted).
    """
    if framework == "torch":
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        total += sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
        return int(trainable), int(total)
    if framework == "keras":
        import math

        trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
        total = sum(math.prod(w.shape) for w in model.weights)
        return int(trainable), int(total)
    raise UserError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")


def head_layer_names(name: str) -> list[str]:
    """The classifier layers of ``name``, which stay trainable when the base is frozen."""
    return list(get_spec(name).head)
