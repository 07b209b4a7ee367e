"""Framework imports and process-wide settings, chosen in one place.

Thread counts must be set before TensorFlow initialises its runtime, and the Keras
backend before Keras is imported, so every module gets the frameworks from here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from typing import Any, Iterator

_threads_set: int | None = None

# TensorFlow's native start-up lines. Those printed before absl::InitializeLog() ignore
# TF_CPP_MIN_LOG_LEVEL, so they are filtered out of stderr while TensorFlow is imported.
_NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "  # absl INFO/WARNING records (errors are kept)
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)")
NATIVE_LOGS_ENV = "ALEXBENCH_NATIVE_LOGS"  # "1": show TensorFlow's native logs (set by --debug / --verbose)


def native_logs_wanted() -> bool:
    return os.environ.get(NATIVE_LOGS_ENV, "") not in ("", "0")


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send fd 2 to a temp file while the body runs, then replay every line that is not start-up noise."""
    if native_logs_wanted():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines() if not _NATIVE_NOISE.match(ln)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


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


KERAS_BACKENDS: tuple[str, ...] = ("tensorflow", "jax", "torch")
#: what to install for each backend that is not a core dependency
_BACKEND_INSTALL = {"jax": "pip install 'jax[cpu]==0.10.2' (or alexbench's [jax] extra)"}


def keras_backend_in_process() -> str | None:
    """The backend Keras runs on in this process, or None while Keras is not imported yet."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    return keras.backend.backend()


def can_use_keras_backend(backend: str) -> bool:
    """True when this process can run Keras on ``backend``: Keras is not imported yet, or runs on it already.

    Keras reads ``KERAS_BACKEND`` once, at import time; another backend needs another process.
    """
    return keras_backend_in_process() in (None, backend)


def check_keras_backend(backend: str, field: str = "keras_backend") -> None:
    """Refuse an unknown backend, or one whose library is not installed, with one clear line."""
    from alexbench.errors import UserError

    if backend not in KERAS_BACKENDS:
        raise UserError(f"{field}: unknown Keras backend {backend!r} (choose from {', '.join(KERAS_BACKENDS)})")
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    if importlib.util.find_spec(module) is None:
        hint = _BACKEND_INSTALL.get(backend, f"pip install {module}")
        raise UserError(f"{field}: {backend!r} needs the {module} package, which is not installed; {hint}")


def import_keras(threads: int | None = None, backend: str | None = None, cpu_devices: int = 1) -> Any:
    """Import Keras 3, quietly, on ``backend`` (default: ``$KERAS_BACKEND``, else TensorFlow).

    ``cpu_devices``: on JAX, the number of devices its CPU shows (when this call starts JAX).

    Raises UserError when Keras already runs on another backend in this process (the
    caller then needs a child process, see :mod:`alexbench.backend_process`).
    """
    from alexbench.errors import UserError

    want = backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    have = keras_backend_in_process()
    if have is not None:
        if backend is not None and have != backend:
            raise UserError(f"keras_backend: {backend!r} asked for, but this process already runs Keras on "
                            f"{have!r}; Keras reads its backend once per process")
        set_threads(threads or _threads_set)
        return sys.modules["keras"]
    check_keras_backend(want, "keras_backend" if backend else "KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = want
    if not native_logs_wanted():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # INFO and WARNING after absl's start
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if want == "jax":
        _set_xla_threads(threads or _threads_set or _default_threads())
        if cpu_devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            # JAX's CPU as cpu_devices devices (data-parallel Keras on CPU); read once, when JAX starts. First:
            # XLA ignores the flags after a word without "--" (such as intra_op_parallelism_threads=N above)
            os.environ["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={cpu_devices} "
                                       + os.environ.get("XLA_FLAGS", "")).strip()
    if want == "tensorflow":
        # Load torch and torchvision before TensorFlow: the other order crashes (SIGSEGV) when
        # torchvision later pulls in triton through torch._dynamo (porting and parity import it).
        # Seen with torch 2.14.1 + torchvision 0.29.1 + TF 2.21.
        try:
            import torch  # noqa: F401
            import torchvision  # noqa: F401
        except ImportError:
            pass
    with _quiet_native_stderr():
        if want == "tensorflow":
            import tensorflow as tf  # noqa: F401
        import keras

    if keras.backend.backend() != want:  # pragma: no cover - keras's own config file overrode the variable
        raise UserError(f"keras_backend: asked for {want!r} but Keras started on {keras.backend.backend()!r} "
                        "(check ~/.keras/keras.json)")
    set_threads(threads or _threads_set)
    return keras


def _set_xla_threads(n: int) -> None:
    """XLA's CPU thread pool size, read once when JAX starts its CPU client."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} " \
                                  f"intra_op_parallelism_threads={n}".strip()


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
