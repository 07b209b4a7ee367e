"""Pretrained weights: official ImageNet files through each framework's own cache, or a local file.

Sources for ``pretrained="imagenet"``:
- torch ``alexnet`` / ``vgg16``: torchvision's ``AlexNet_Weights.IMAGENET1K_V1`` /
  ``VGG16_Weights.IMAGENET1K_V1``. The file is downloaded into torch hub's cache
  (``$TORCH_HOME/hub/checkpoints``) with the hash check that its file name carries.
- Keras ``vgg16``: keras.applications' notop file, with the same name, URL and MD5
  as ``keras.applications.VGG16(include_top=False)``. It is fetched with
  ``keras.utils.get_file`` into ``$KERAS_HOME/models``. This covers the convolutions
  only; fc1, fc2 and predictions start fresh.
- Keras ``alexnet``: torchvision's AlexNet weights, ported by ``port.torch_to_keras``.
  No Keras AlexNet weights exist anywhere else.

``weights=PATH`` replaces the download with an offline copy of the same file. When
neither exists, ``WeightsUnavailable`` names the expected file and ``--weights``.

Safety. Torch files are read with ``torch.load(weights_only=True)``, so a pickle
that would run code is refused. Keras full-model files (``.keras``, and ``.h5`` with a
model config) go through ``keras.saving.load_model(safe_mode=True)``. Weights-only
``.h5`` files are read as plain HDF5 arrays.

Matching is by layer name, and checked before anything is written. A layer whose
shapes differ (other than the final classifier) is a UserError that names the first
such layer and both shapes. A final classifier of another size (ImageNet's 1000
classes) is left freshly initialised for ``num_classes``. That is the head
replacement.

Keras files (keras.applications' cache, HDF5 weights, full-model files) are read in
:mod:`alexbench.models.pretrained_keras`; torch files here.
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import Any, Callable
from urllib.parse import urlparse

from alexbench.checkpoint import check_weight, check_weight_kind
from alexbench.errors import UserError


class WeightsUnavailable(UserError):
    """Pretrained weights are neither in the cache nor downloadable (e.g. offline).

    The message ends with the way out, which depends on the command: ``train`` takes
    ``--weights PATH`` (the default), ``run`` takes ``--weights-dir DIR`` (:meth:`way_out`).
    """

    def __init__(self, reason: str, way_out: str = "pass --weights PATH to an offline copy") -> None:
        self.reason = reason
        super().__init__(f"{reason}; put the file there, or {way_out}")

    def way_out(self, way_out: str) -> str:
        """The message with another way out, e.g. ``"pass --weights-dir DIR holding FILE"``."""
        return f"{self.reason}; put the file there, or {way_out}"


# model -> torchvision weights enum, member, and that member's URL as of torchvision 0.29.
# The URL is used only where importing torchvision would crash (see _torchvision_url).
# tests/test_port_pretrained.py checks that it still equals torchvision's own.
TORCHVISION_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "alexnet": ("AlexNet_Weights", "IMAGENET1K_V1", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg16": ("VGG16_Weights", "IMAGENET1K_V1", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}
# model -> (file name, URL, MD5): the values keras.applications.VGG16(include_top=False) uses.
KERAS_APPLICATIONS_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "vgg16": (
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
    ),
}
KERAS_EXTENSIONS = (".h5", ".hdf5", ".keras")


def imagenet_source(name: str, framework: str) -> str | None:
    """Where ``pretrained="imagenet"`` comes from: "torchvision", "keras.applications" or None."""
    if framework == "keras" and name in KERAS_APPLICATIONS_WEIGHTS:
        return "keras.applications"
    if name in TORCHVISION_WEIGHTS:
        return "torchvision"
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ---------------------------------------------------------------- torch files

def read_torch_file(path: str) -> dict[str, Any]:
    """A state_dict from a ``.pth`` file, read with ``weights_only=True``.

    Accepts a bare state_dict, or a checkpoint dict that holds one under
    ``state_dict``, ``model`` or ``model_state_dict``. A ``module.`` prefix (from
    DataParallel) is removed.
    """
    from alexbench.frameworks import import_torch

    torch = import_torch()
    if not os.path.isfile(path):
        raise UserError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path}: refused: the file contains Python objects, not just weights, and "
                        f"alexbench loads torch files with weights_only=True ({first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a file that is not weights
        raise UserError(f"{path}: not a readable PyTorch weights file ({first_line(exc)})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a PyTorch state_dict (layer names -> tensors)")
    for k, v in obj.items():
        check_weight(path, str(k), v)
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _from_torchvision_keys(model: Any, state: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """``{our key: (file key, tensor)}``. torchvision's positional keys (``features.0.weight``) are renamed.

    alexbench's torch models keep torchvision's module order inside ``features`` and
    ``classifier`` and only name the modules, so position i is the i-th named child.
    """
    out: dict[str, tuple[str, Any]] = {}
    children = {name: [n for n, _ in module.named_children()] for name, module in model.named_children()}
    for key, tensor in state.items():
        parts = key.split(".")
        ours = key
        if len(parts) >= 3 and parts[1].isdigit() and parts[0] in children and int(parts[1]) < len(children[parts[0]]):
            ours = ".".join([parts[0], children[parts[0]][int(parts[1])], *parts[2:]])
        out[ours] = (key, tensor)
    return out


def apply_torch_state(model: Any, state: dict[str, Any], source: str, classifier: str) -> bool:
    """Load ``state`` into ``model`` by name after checking every shape; returns True if the head was kept.

    The final layer ``classifier`` is kept freshly initialised when the file's class
    count differs (or the file has no head).
    """
    named = _from_torchvision_keys(model, state)
    ours = model.state_dict()
    head_keys = [k for k in ours if k.split(".")[-2:-1] == [classifier]]
    merged: dict[str, Any] = {}
    for key, current in ours.items():
        layer = key.rsplit(".", 1)[0]
        if key not in named:
            if key.endswith("num_batches_tracked") or key in head_keys:
                continue
            raise UserError(f"{source}: no weights for layer {layer!r} ({key}); is the file for another model "
                            "or other options?")
        file_key, tensor = named[key]
        if tuple(tensor.shape) != tuple(current.shape):
            if key in head_keys:
                continue
            raise UserError(f"{source}: layer {layer!r} does not match: the file has {file_key} with shape "
                            f"{tuple(tensor.shape)}, the model expects {tuple(current.shape)}")
        check_weight_kind(source, file_key, tensor, current)
        merged[key] = tensor
    extra = [file_key for key, (file_key, _) in named.items() if key not in ours]
    if extra:
        raise UserError(f"{source}: the file has weights {extra[0]!r} for a layer the model does not have; "
                        "is the file for another model or other options?")
    head_kept = all(k in merged for k in head_keys)
    if not head_kept:
        for k in head_keys:
            merged.pop(k, None)
    model.load_state_dict({**ours, **merged})
    return head_kept


def _torchvision_url(name: str) -> str:
    """The weights URL from torchvision's weights API, or the recorded copy when torchvision cannot be imported.

    torchvision imports triton, and importing triton after TensorFlow's libraries
    are loaded kills the process with a segfault (torch 2.14 / TF 2.21). So once
    TensorFlow is loaded and triton is not, the recorded URL is used instead.
    """
    enum_name, member, recorded = TORCHVISION_WEIGHTS[name]
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        return recorded
    import torchvision

    return getattr(torchvision.models, enum_name)[member].url


def torchvision_state_dict(name: str, weights: str | None = None, progress: bool = True) -> dict[str, Any]:
    """torchvision's ImageNet state_dict for ``name``: from ``weights``, torch hub's cache, or a download."""
    if weights is not None:
        return read_torch_file(weights)
    from alexbench.frameworks import import_torch

    torch = import_torch()
    enum_name, member, _ = TORCHVISION_WEIGHTS[name]
    url = _torchvision_url(name)
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))
    if not os.path.exists(cached):
        try:
            torch.hub.load_state_dict_from_url(url, progress=progress, check_hash=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failed download (network, hash, disk): not available
            if not os.path.exists(cached):
                raise WeightsUnavailable(
                    f"torchvision's ImageNet weights for {name} ({enum_name}.{member}) are not available: "
                    f"expected {cached} (download from {url} failed: {first_line(exc)})") from None
    return read_torch_file(cached)


# ---------------------------------------------------------------- create_model's entry point

def _file_kind(path: str) -> str:
    return "keras" if path.lower().endswith(KERAS_EXTENSIONS) else "torch"


def load_pretrained(spec: Any, framework: str, pretrained: str | None, weights: str | None,
                    build: Callable[[str], Any]) -> Any:
    """A ``framework`` model of ``spec`` filled with pretrained weights (see the module docstring).

    The weights are found and read before any model is built, so a missing or unsafe
    file fails fast. ``build(framework)`` makes a fresh model (with the caller's
    ``num_classes`` and options) in either framework. A file in the other framework's
    format (Keras AlexNet from torchvision weights) is loaded into that framework's
    model and then ported.
    """
    name = spec.name
    if pretrained == "imagenet":
        source = imagenet_source(name, framework)
        if source is None:
            have = [n for n in ("alexnet", "vgg16") if imagenet_source(n, framework)]
            raise UserError(f"model {name}: no ImageNet weights for {framework}; models with them: "
                            f"{', '.join(have)}")
        expected_kind = "keras" if source == "keras.applications" else "torch"
        if weights is not None:
            weights = os.fspath(weights)
            if _file_kind(weights) != expected_kind:
                raise UserError(f"--weights {weights}: {framework} {name}'s ImageNet weights are {source}'s "
                                f"({'an .h5 file' if expected_kind == 'keras' else 'a .pth file'}), and their "
                                f"preprocessing ({spec.pretrained_norm.get(framework)}) depends on that")
        if source == "torchvision":
            kind, label = "torch", weights or f"torchvision {'.'.join(TORCHVISION_WEIGHTS[name][:2])}"
            state = torchvision_state_dict(name, weights)
        else:
            from alexbench.models.pretrained_keras import keras_applications_file, read_keras_file

            kind = "keras"
            label = keras_applications_file(name, weights)
            arrays = read_keras_file(label)
    elif pretrained is not None:
        if weights is not None:
            raise UserError("pass either a weights path as pretrained, or pretrained='imagenet' with --weights, "
                            "not both")
        label = os.fspath(pretrained)
        kind = _file_kind(label)
        if kind == "torch":
            state = read_torch_file(label)
        else:
            from alexbench.models.pretrained_keras import read_keras_file

            arrays = read_keras_file(label)
    else:
        raise UserError(f"--weights {weights}: needs --pretrained imagenet")

    loaded = build(kind)
    if kind == "torch":
        apply_torch_state(loaded, state, label, spec.classifier)
    else:
        from alexbench.models.pretrained_keras import apply_keras_weights

        apply_keras_weights(loaded, arrays, label, spec.head)
    if framework == kind:
        return loaded
    from alexbench.models import port

    model = build(framework)
    if kind == "torch":
        return port.torch_to_keras(loaded, model)
    return port.keras_to_torch(loaded, model)
