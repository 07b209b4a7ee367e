"""Copy weights between the PyTorch and Keras definitions of a model, by layer name.

Layers are matched by name. A torch module is known by the last part of its
qualified name (``features.conv1`` is ``conv1``), and a Keras layer by ``layer.name``.
Every layer with weights must exist on both sides with the same shapes. Otherwise a
UserError names the layer. The conventions handled:

- Convolution kernels: torch OIHW <-> Keras HWIO.
- Dense kernels: torch (out, in) <-> Keras (in, out).
- Flatten order: torch flattens NCHW as (c, h, w), Keras flattens NHWC as (h, w, c).
  The first dense layer after ``Flatten`` has its input rows permuted, using the
  (h, w, c) shape that the Keras Flatten layer receives.
- BatchNorm: weight/bias/running_mean/running_var <-> gamma/beta/moving_mean/
  moving_variance. The layer settings are checked rather than copied: Keras momentum
  must be 1 - torch momentum, and eps must be equal.
- LRN: no weights. The settings are checked, since both sides use torch's
  convention (``keras_layers.LocalResponseNorm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alexbench.errors import UserError
from alexbench.frameworks import import_keras, import_torch


def _torch_leaves(model: Any) -> dict[str, Any]:
    leaves: dict[str, Any] = {}
    for qualified, module in model.named_modules():
        if not qualified or any(True for _ in module.children()):
            continue
        short = qualified.rsplit(".", 1)[-1]
        if short in leaves:
            raise UserError(f"port: torch model has two layers named {short!r}")
        leaves[short] = module
    return leaves


def _has_state(module: Any) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        n in ("running_mean", "running_var") for n, _ in module.named_buffers(recurse=False))


def _flatten_inputs(keras_model: Any) -> dict[str, tuple[int, int, int]]:
    """``{dense layer name: (h, w, c)}`` for the first Dense after each Flatten of a 4-D map."""
    keras = import_keras()
    pending: tuple[int, int, int] | None = None
    found: dict[str, tuple[int, int, int]] = {}
    for layer in keras_model.layers:
        if isinstance(layer, keras.layers.Flatten):
            shape = tuple(layer.input.shape[1:])
            pending = shape if len(shape) == 3 else None
        elif isinstance(layer, keras.layers.Dense) and pending is not None:
            found[layer.name] = pending
            pending = None
    return found


def _pairs(torch_model: Any, keras_model: Any) -> list[tuple[str, Any, Any]]:
    """(name, torch module, keras layer) for every layer with weights or settings to match, in Keras order."""
    torch = import_torch()
    from alexbench.models.keras_layers import LocalResponseNorm

    leaves = _torch_leaves(torch_model)
    layers = {layer.name: layer for layer in keras_model.layers}
    torch_named = {n for n, m in leaves.items() if _has_state(m) or isinstance(m, torch.nn.LocalResponseNorm)}
    keras_named = {n for n, layer in layers.items() if layer.weights or isinstance(layer, LocalResponseNorm)}
    for name in sorted(torch_named ^ keras_named):
        side, other = ("torch", "keras") if name in torch_named else ("keras", "torch")
        raise UserError(f"port: layer {name!r} is in the {side} model but not in the {other} model")
    return [(layer.name, leaves[layer.name], layer) for layer in keras_model.layers if layer.name in keras_named]


def _check_settings(name: str, module: Any, layer: Any) -> None:
    torch = import_torch()
    keras = import_keras()
    from alexbench.models.keras_layers import LocalResponseNorm

    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        if not isinstance(layer, keras.layers.BatchNormalization):
            raise UserError(f"port: layer {name!r} is BatchNorm in torch but {type(layer).__name__} in keras")
        if module.momentum is None or abs(layer.momentum - (1.0 - module.momentum)) > 1e-9 \
                or abs(layer.epsilon - module.eps) > 1e-12 or not (layer.center and layer.scale and module.affine):
            raise UserError(f"port: layer {name!r}: BatchNorm settings differ (torch momentum {module.momentum}, "
                            f"eps {module.eps}; keras momentum {layer.momentum}, epsilon {layer.epsilon}); "
                            "keras momentum must be 1 - torch momentum, eps equal, both affine")
    elif isinstance(module, torch.nn.LocalResponseNorm):
        if not isinstance(layer, LocalResponseNorm):
            raise UserError(f"port: layer {name!r} is LocalResponseNorm in torch but {type(layer).__name__} in keras")
        ours = (layer.size, layer.alpha, layer.beta, layer.k)
        theirs = (module.size, module.alpha, module.beta, module.k)
        if not np.allclose(ours, theirs, rtol=1e-12, atol=0):
            raise UserError(f"port: layer {name!r}: LRN (size, alpha, beta, k) differ: torch {theirs}, keras {ours}")
    elif isinstance(module, torch.nn.Conv2d):
        if not isinstance(layer, keras.layers.Conv2D) or module.groups != 1 or \
                (module.bias is None) == bool(layer.use_bias):
            raise UserError(f"port: layer {name!r}: torch Conv2d (groups {module.groups}, bias "
                            f"{module.bias is not None}) does not match keras {type(layer).__name__}")
    elif isinstance(module, torch.nn.Linear):
        if not isinstance(layer, keras.layers.Dense) or (module.bias is None) == bool(layer.use_bias):
            raise UserError(f"port: layer {name!r}: torch Linear does not match keras {type(layer).__name__}")
    else:
        raise UserError(f"port: layer {name!r}: no rule for torch {type(module).__name__}")


def torch_to_keras(torch_model: Any, keras_model: Any) -> Any:
    """Copy every weight of ``torch_model`` into ``keras_model`` (same architecture); returns keras_model."""
    torch = import_torch()
    flat = _flatten_inputs(keras_model)
    updates = []
    for name, module, layer in _pairs(torch_model, keras_model):
        _check_settings(name, module, layer)
        if isinstance(module, torch.nn.LocalResponseNorm):
            continue
        # torch does the transposes: its blocked copies are several times faster than numpy's
        # strided ones on the 100M-weight dense layers.
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            tensors = [module.weight, module.bias, module.running_mean, module.running_var]
        else:
            w = module.weight.detach().cpu().float()
            if isinstance(module, torch.nn.Conv2d):
                kernel = w.permute(2, 3, 1, 0)  # OIHW -> HWIO
            elif name in flat:
                h, wd, c = flat[name]
                if w.shape[1] != h * wd * c:
                    raise UserError(f"port: layer {name!r}: {w.shape[1]} inputs, but flatten gives {h}x{wd}x{c}")
                # torch's input columns are ordered (c, h, w); the Keras kernel's rows must be (h, w, c)
                kernel = w.t().contiguous().reshape(c, h * wd, -1).permute(1, 0, 2).reshape(h * wd * c, -1)
            else:
                kernel = w.t()
            tensors = [kernel] + ([module.bias] if module.bias is not None else [])
        arrays = [t.detach().cpu().float().contiguous().numpy() for t in tensors]
        got, expected = [a.shape for a in arrays], [tuple(v.shape) for v in layer.weights]
        if got != expected:
            raise UserError(f"port: layer {name!r}: torch weights give keras shapes {got}, keras expects {expected}")
        updates.append((layer, arrays))
    for layer, arrays in updates:  # all checks passed: write
        layer.set_weights(arrays)
    return keras_model


def keras_to_torch(keras_model: Any, torch_model: Any) -> Any:
    """Copy every weight of ``keras_model`` into ``torch_model`` (same architecture); returns torch_model."""
    torch = import_torch()
    flat = _flatten_inputs(keras_model)
    updates = []
    for name, module, layer in _pairs(torch_model, keras_model):
        _check_settings(name, module, layer)
        if isinstance(module, torch.nn.LocalResponseNorm):
            continue
        arrays = [torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in layer.get_weights()]
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            targets = [module.weight, module.bias, module.running_mean, module.running_var]
        else:
            kernel = arrays[0]
            if isinstance(module, torch.nn.Conv2d):
                arrays[0] = kernel.permute(3, 2, 0, 1)  # HWIO -> OIHW
            elif name in flat:
                h, w, c = flat[name]
                # the Keras kernel's rows are ordered (h, w, c); torch's input columns must be (c, h, w)
                arrays[0] = kernel.reshape(h * w, c, -1).permute(1, 0, 2).reshape(c * h * w, -1).t()
            else:
                arrays[0] = kernel.t()
            targets = [module.weight] + ([module.bias] if module.bias is not None else [])
        if len(arrays) != len(targets):
            raise UserError(f"port: layer {name!r}: keras has {len(arrays)} weights, torch {len(targets)}")
        for t, a in zip(targets, arrays):
            if tuple(t.shape) != tuple(a.shape):
                raise UserError(f"port: layer {name!r}: keras shape {tuple(a.shape)} does not fit torch shape "
                                f"{tuple(t.shape)}")
        updates.append((targets, arrays))
    with torch.no_grad():
        for targets, arrays in updates:
            for t, a in zip(targets, arrays):
                t.copy_(a)
    return torch_model
