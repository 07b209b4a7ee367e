"""The names of runs: entry labels, run-folder slugs and framework names (part of :mod:`alexbench.rundir`).

``alexbench run`` names an entry's run folder by :func:`run_slug`; reports label runs by
:func:`entry_label` and :func:`framework_label`. :mod:`alexbench.rundir` exports all of them.
"""

from __future__ import annotations


def _init_kind(pretrained: str | None) -> str:
    return "scratch" if not pretrained else ("imagenet" if pretrained == "imagenet" else "weights")


#: how reports name each Keras backend ("Keras (JAX)")
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "torch"}


def run_backend(framework: str, backend: str | None = None) -> str:
    """metrics.json's ``backend``: ``torch`` for PyTorch; the Keras backend (TensorFlow when unrecorded) for Keras."""
    if framework != "keras":
        return "torch"
    return backend or "tensorflow"


def framework_key(framework: str, backend: str | None = None) -> str:
    """``torch``, ``keras`` (TensorFlow backend), ``keras-jax`` or ``keras-torch``: the framework part of names."""
    b = run_backend(framework, backend)
    return f"{framework}-{b}" if framework == "keras" and b != "tensorflow" else framework


def framework_label(framework: str, backend: str | None = None) -> str:
    """``PyTorch``, ``Keras (TensorFlow)``, ``Keras (JAX)`` or ``Keras (torch)``: what reports print."""
    if framework == "torch":
        return "PyTorch"
    if framework == "keras":
        b = run_backend(framework, backend)
        return f"Keras ({BACKEND_NAMES.get(b, b)})"
    return framework


def entry_label(model: str, framework: str, pretrained: str | None, seed: int | None = None,
                backend: str | None = None) -> str:
    """The short label of an entry, e.g. ``alexnet_cifar/torch/scratch/s0`` or ``alexnet_cifar/keras-jax/scratch/s0``
    (no seed: the group's label)."""
    return (f"{model}/{framework_key(framework, backend)}/{_init_kind(pretrained)}"
            + (f"/s{seed}" if seed is not None else ""))


def run_slug(model: str, framework: str, pretrained: str | None, seed: int, backend: str | None = None) -> str:
    """The folder name of an entry of ``alexbench run``, e.g. ``alexnet_cifar-torch-scratch-s0``
    (``alexnet_cifar-keras-jax-scratch-s0`` for Keras on JAX)."""
    return f"{model}-{framework_key(framework, backend)}-{'pretrained' if pretrained else 'scratch'}-s{seed}"
