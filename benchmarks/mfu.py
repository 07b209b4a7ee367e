"""Model-FLOP utilisation: achieved training FLOP/s against this machine's peak in the precision the step uses.

- Precision: the one ``precision: auto`` picks on this machine (bf16 where the CPU has
  AVX512-BF16 or AMX, else fp32), unless the spec names one. On a CPU without native
  bf16, a bf16 peak would be an emulated, slower rate, and an fp32 step measured
  against a bf16 peak would be under-rated; so the peak always matches the step.
- Kernels: those the training step calls. The torch engine's step runs oneDNN
  convolutions (channels_last) and matmuls; the Keras engine on TensorFlow runs
  TensorFlow's oneDNN ``Conv2D`` (NHWC) and ``MatMul``. So there are two targets,
  one per framework, each timing square matmuls (sizes 2048 and 4096) and a large 3x3
  convolution (batch 32, 256 -> 256 channels, 32x32, stride 1, same padding) in that
  precision, with the run's thread count. FLOPs are ``2 * M * N * K`` for a matmul and
  ``2 * N * H * W * C_in * C_out * 9`` for the convolution. For each shape the median
  of the repeats is taken; the peak is the largest median. It is measured in the same
  run as the models, interleaved with them (see :mod:`benchmarks.harness`).
- Achieved: ``img/s * 3 * forward FLOPs per image``. The forward count is
  :func:`alexbench.models.flops_per_image` (a multiply-add is 2 FLOPs; convolutions and
  dense layers only). The factor 3 is the usual convention that the backward pass costs
  twice the forward (gradients with respect to inputs and to weights).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

CONV_SHAPE = (32, 256, 256, 32)  # batch, C_in, C_out, H = W


def default_precision() -> str:
    """What ``precision: auto`` resolves to on this machine's CPU."""
    from alexbench.frameworks import cpu_has_bf16

    return "bf16" if cpu_has_bf16() else "fp32"


def _rate(fn: Callable[[], object], flops: float, reps: int) -> float:
    """Median FLOP/s of ``reps`` timed calls of ``fn`` (after 2 untimed ones)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times)


def conv_flops_count(n: int, c_in: int, c_out: int, hw: int) -> float:
    return 2.0 * n * hw * hw * c_in * c_out * 9


def gemm_flops(torch, n: int, dtype, reps: int) -> float:  # noqa: ANN001
    """Median FLOP/s of ``n x n @ n x n`` products in torch."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return _rate(lambda: torch.matmul(a, b), 2.0 * n ** 3, reps)


def conv_flops(torch, dtype, reps: int, shape: tuple[int, int, int, int] = CONV_SHAPE) -> float:  # noqa: ANN001
    """Median FLOP/s of a 3x3 channels_last convolution in torch (oneDNN, as in the engine's step)."""
    n, c_in, c_out, hw = shape
    x = torch.randn(n, c_in, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c_out, c_in, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return _rate(lambda: torch.nn.functional.conv2d(x, w, padding=1), conv_flops_count(*shape), reps)


class GemmTarget:
    """The peak in the step's precision with torch's kernels (and, for reference, fp32 matmul) in its own process."""

    def __init__(self, spec: dict) -> None:
        from alexbench.frameworks import import_torch

        self.torch = import_torch(spec.get("threads"))
        self.sizes = tuple(spec.get("sizes", (2048, 4096)))
        self.reps = int(spec.get("reps", 5))
        self.conv_shape = tuple(spec.get("conv_shape", CONV_SHAPE))
        self.precision = spec.get("precision") or default_precision()
        self.threads = self.torch.get_num_threads()

    def op_gemm(self, fp32: bool = False, **_: object) -> dict:
        torch = self.torch
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[self.precision]
        per_size = {str(n): gemm_flops(torch, n, dtype, self.reps) for n in self.sizes}
        out = {"precision": self.precision, "kernels": "torch (oneDNN/MKL)", "matmul_by_size": per_size,
               "threads": self.threads}
        out["conv3x3"] = conv_flops(torch, dtype, self.reps, self.conv_shape)
        out["conv_shape"] = list(self.conv_shape)
        out["flops"] = max([*per_size.values(), out["conv3x3"]])
        if fp32:
            n = min(self.sizes)
            out["fp32_flops"] = gemm_flops(torch, n, torch.float32, max(3, self.reps // 2))
            out["fp32_size"] = n
        return out


class TfGemmTarget:
    """The same peak with TensorFlow's kernels (what the Keras engine's step calls), in its own process."""

    def __init__(self, spec: dict) -> None:
        from alexbench.frameworks import import_keras

        import_keras(spec.get("threads"))
        import tensorflow as tf

        self.tf = tf
        self.sizes = tuple(spec.get("sizes", (2048, 4096)))
        self.reps = int(spec.get("reps", 5))
        self.conv_shape = tuple(spec.get("conv_shape", CONV_SHAPE))
        self.precision = spec.get("precision") or default_precision()
        self.threads = tf.config.threading.get_intra_op_parallelism_threads()

    def op_gemm(self, **_: object) -> dict:
        tf = self.tf
        dtype = {"bf16": tf.bfloat16, "fp32": tf.float32}[self.precision]
        per_size = {}
        for n in self.sizes:
            a = tf.cast(tf.random.normal((n, n)), dtype)
            b = tf.cast(tf.random.normal((n, n)), dtype)
            def matmul(a: Any = a, b: Any = b) -> Any:
                return tf.linalg.matmul(a, b).numpy()

            per_size[str(n)] = _rate(matmul, 2.0 * n ** 3, self.reps)
        out = {"precision": self.precision, "kernels": "tensorflow (oneDNN)", "matmul_by_size": per_size,
               "threads": self.threads}
        n, c_in, c_out, hw = self.conv_shape
        x = tf.cast(tf.random.normal((n, hw, hw, c_in)), dtype)
        w = tf.cast(tf.random.normal((3, 3, c_in, c_out)), dtype)
        out["conv3x3"] = _rate(lambda: tf.nn.conv2d(x, w, 1, "SAME").numpy(), conv_flops_count(*self.conv_shape),
                               self.reps)
        out["conv_shape"] = list(self.conv_shape)
        out["flops"] = max([*per_size.values(), out["conv3x3"]])
        return out


def training_flops(ips: float, forward_flops_per_image: float) -> float:
    """Achieved training FLOP/s under the 3x-forward convention."""
    return ips * 3.0 * forward_flops_per_image


def mfu(ips: float, forward_flops_per_image: float, peak_flops: float) -> float:
    return training_flops(ips, forward_flops_per_image) / peak_flops
