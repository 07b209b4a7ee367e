"""Framework imports and process-wide settings, chosen in one place.

Thread counts must be set before TensorFlow initialises its runtime, and the Keras
backend before Keras is imported, so every module gets the frameworks from here.
"""

from __future__ import annotations

import os
from typing import Any

_threads_set: int | None = None


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def set_threads(threads: int | None) -> int:
    """Set intra-op threads once for both frameworks; returns the count in force."""
    global _threads_set
    n = threads or _default_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(n))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    if _threads_set == n:
        return n
    _threads_set = n
    import sys

    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # runtime already initialised: the env vars above applied
    return n


def import_torch(threads: int | None = None) -> Any:
    import torch

    set_threads(threads or _threads_set)
    return torch


def import_keras(threads: int | None = None) -> Any:
    """Import Keras 3 on the TensorFlow backend, quietly."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    # Load torch and torchvision before TensorFlow: the other order crashes (SIGSEGV) when
    # torchvision later pulls in triton through torch._dynamo (porting and parity import it).
    # Seen with torch 2.14.1 + torchvision 0.29.1 + TF 2.21.
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        pass
    import tensorflow as tf  # noqa: F401
    import keras

    if keras.backend.backend() != "tensorflow":
        from alexbench.errors import UserError

        raise UserError(f"KERAS_BACKEND={keras.backend.backend()}: alexbench's keras engine needs 'tensorflow'")
    set_threads(threads or _threads_set)
    return keras


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
