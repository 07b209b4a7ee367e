"""Pretrained weights in Keras files: keras.applications' ImageNet file through Keras's cache,
weights-only HDF5 files (read as plain arrays, legacy and Keras 3 layouts) and full-model files
(``keras.saving.load_model(safe_mode=True)``), checked and applied by layer name.
See :mod:`alexbench.models.pretrained` for the sources and the matching rules.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from alexbench.checkpoint import check_weight, check_weight_kind
from alexbench.errors import UserError
from alexbench.models.pretrained import KERAS_APPLICATIONS_WEIGHTS, WeightsUnavailable, first_line


def _keras_home() -> str:
    """Keras's cache folder, read now (Keras itself reads ``KERAS_HOME`` once, at import)."""
    if os.environ.get("KERAS_HOME"):
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def keras_applications_file(name: str, weights: str | None = None) -> str:
    """Path of keras.applications' notop ImageNet file for ``name``; downloads (hash-checked) if needed."""
    if weights is not None:
        return weights
    from alexbench.frameworks import import_keras

    keras = import_keras()
    fname, url, md5 = KERAS_APPLICATIONS_WEIGHTS[name]
    cache_dir = _keras_home()
    expected = os.path.join(cache_dir, "models", fname)
    try:
        return keras.utils.get_file(fname, url, file_hash=md5, cache_subdir="models", cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - any failed download (network, hash, disk): not available
        raise WeightsUnavailable(
            f"keras.applications' ImageNet weights for {name} are not available: expected {expected} "
            f"(download from {url} failed: {first_line(exc)})") from None


def _h5_attr_list(group: Any, name: str) -> list[str]:
    """A string-list attribute, including Keras's chunked form (``name0``, ``name1``, ...)."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _h5_child(path: str, parent: Any, name: str, kind: str) -> Any:
    """``parent[name]``, which must be an HDF5 ``kind`` ("Group" or "Dataset")."""
    import h5py

    obj = parent.get(name)
    if not isinstance(obj, getattr(h5py, kind)):
        got = "nothing" if obj is None else f"a {type(obj).__name__}"
        raise UserError(f"{path}: {parent.name.rstrip('/')}/{name}: expected an HDF5 {kind.lower()}, found {got}")
    return obj


def _h5_weights(path: str, group: Any, names: list[str]) -> list[np.ndarray]:
    out = []
    for n in names:
        ds = _h5_child(path, group, n, "Dataset")
        if ds.dtype.kind not in "fiu":
            raise UserError(f"{path}: {ds.name}: dtype {ds.dtype} is neither floating point nor integer")
        out.append(np.asarray(ds))
    return out


def _legacy_h5_weights(path: str, group: Any) -> dict[str, list[np.ndarray]]:
    """Weights from the legacy HDF5 layout (keras.applications' files): one group per layer, by name."""
    out: dict[str, list[np.ndarray]] = {}
    for layer in _h5_attr_list(group, "layer_names"):
        g = _h5_child(path, group, layer, "Group")
        names = _h5_attr_list(g, "weight_names")
        if names:
            out[layer] = _h5_weights(path, g, names)
    return out


def _keras3_h5_weights(path: str, group: Any) -> dict[str, list[np.ndarray]]:
    """Weights from a Keras 3 ``.weights.h5``: ``layers/<key>/vars/<i>``, layer name in the vars' attrs."""
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    found: list[Any] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group) and name.endswith("vars") and "name" in obj.attrs and len(obj):
            found.append(obj)

    _h5_child(path, group, "layers", "Group").visititems(visit)
    for obj in found:
        name = obj.attrs["name"]
        if not isinstance(name, (str, bytes)):
            raise UserError(f"{path}: {obj.name}: attribute 'name' is not a layer name (got {type(name).__name__})")
        out[name.decode("utf8") if isinstance(name, bytes) else name] = _h5_weights(
            path, obj, [str(i) for i in range(len(obj))])
    return out


def _checked(path: str, weights: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    for layer, arrays in weights.items():
        for i, a in enumerate(arrays):
            check_weight(path, f"layer {layer!r} weight {i}", a)
    return weights


def read_keras_file(path: str) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays in layer.weights order]}`` from a Keras weights or model file."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: weights file not found")
    from alexbench.frameworks import import_keras

    keras = import_keras()
    import alexbench.models.keras_layers  # noqa: F401  (registers LRN / adaptive pool for load_model)

    def full_model() -> dict[str, list[np.ndarray]]:
        try:
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for a file it cannot load
            raise UserError(f"{path}: cannot load Keras model with safe_mode=True ({first_line(exc)})") from None
        return _checked(path, {layer.name: layer.get_weights() for layer in model.layers if layer.weights})

    if path.endswith(".keras"):
        return full_model()
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:  # weights only: read the arrays, build nothing
                if _h5_attr_list(f, "layer_names"):
                    return _checked(path, _legacy_h5_weights(path, f))
                if "layers" in f:
                    return _checked(path, _keras3_h5_weights(path, f))
                raise UserError(f"{path}: an HDF5 file in no Keras layout alexbench knows "
                                "(neither layer_names nor layers/)")
    except OSError as exc:
        raise UserError(f"{path}: not a readable HDF5 file ({first_line(exc)})") from None
    return full_model()  # a legacy full-model .h5


def apply_keras_weights(model: Any, weights: dict[str, list[np.ndarray]], source: str,
                        head: tuple[str, ...]) -> bool:
    """Set ``model``'s weights by layer name after checking every shape; returns True if the head was kept.

    Head layers missing from the file (a notop file) stay freshly initialised. So does
    the final layer ``head[-1]`` when its shape differs.
    """
    classifier = head[-1]
    updates = []
    head_kept = True
    layers = [layer for layer in model.layers if layer.weights]
    for layer in layers:
        arrays = weights.get(layer.name)
        if arrays is None:
            if layer.name in head:
                head_kept = head_kept and layer.name != classifier
                continue
            raise UserError(f"{source}: no weights for layer {layer.name!r}; is the file for another model "
                            "or other options?")
        expected = [tuple(v.shape) for v in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if got != expected:
            if layer.name == classifier:
                head_kept = False
                continue
            if len(got) != len(expected):
                raise UserError(f"{source}: layer {layer.name!r} does not match: the file has {len(got)} weights "
                                f"with shapes {got}, the model expects {expected}")
            i = next(i for i, (g, e) in enumerate(zip(got, expected)) if g != e)
            raise UserError(f"{source}: layer {layer.name!r} does not match: the file has {layer.weights[i].name} "
                            f"with shape {got[i]}, the model expects {expected[i]}")
        for a, v in zip(arrays, layer.weights):
            check_weight_kind(source, f"layer {layer.name!r} weight {v.name}", a, v.dtype)
        updates.append((layer, arrays))
    known = {layer.name for layer in layers}
    extra = [name for name, arrays in weights.items() if arrays and name not in known]
    if extra:
        raise UserError(f"{source}: the file has weights for layer {extra[0]!r}, which the model does not have; "
                        "is the file for another model or other options?")
    for layer, arrays in updates:
        layer.set_weights(arrays)
    return head_kept
