"""Model-FLOP utilisation: achieved training FLOP/s against this machine's bf16 GEMM FLOP/s.

- Peak: ``torch.matmul`` of square bf16 matrices (sizes 2048 and 4096) with the run's
  thread count, counted as ``2 * M * N * K`` FLOPs. For each size the median of the
  repeats is taken; the peak is the larger of the two medians. It is measured in the
  same run as the models, interleaved with them (see :mod:`benchmarks.harness`).
- Achieved: ``img/s * 3 * forward FLOPs per image``. The forward count is
  :func:`alexbench.models.flops_per_image` (a multiply-add is 2 FLOPs; convolutions and
  dense layers only). The factor 3 is the usual convention that the backward pass costs
  twice the forward (gradients with respect to inputs and to weights).
"""

from __future__ import annotations

import statistics
import time


def gemm_flops(torch, n: int, dtype, reps: int) -> float:  # noqa: ANN001
    """Median FLOP/s of ``reps`` timed ``n x n @ n x n`` products (after 2 untimed ones)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times)


class GemmTarget:
    """Measures the bf16 (and, for reference, fp32) GEMM rate in its own process."""

    def __init__(self, spec: dict) -> None:
        from alexbench.frameworks import import_torch

        self.torch = import_torch(spec.get("threads"))
        self.sizes = tuple(spec.get("sizes", (2048, 4096)))
        self.reps = int(spec.get("reps", 5))
        self.threads = self.torch.get_num_threads()

    def op_gemm(self, fp32: bool = False, **_: object) -> dict:
        torch = self.torch
        per_size = {str(n): gemm_flops(torch, n, torch.bfloat16, self.reps) for n in self.sizes}
        out = {"flops": max(per_size.values()), "bf16_by_size": per_size, "threads": self.threads}
        if fp32:
            n = min(self.sizes)
            out["fp32_flops"] = gemm_flops(torch, n, torch.float32, max(3, self.reps // 2))
            out["fp32_size"] = n
        return out


def training_flops(ips: float, forward_flops_per_image: float) -> float:
    """Achieved training FLOP/s under the 3x-forward convention."""
    return ips * 3.0 * forward_flops_per_image


def mfu(ips: float, forward_flops_per_image: float, peak_flops: float) -> float:
    return training_flops(ips, forward_flops_per_image) / peak_flops
