"""Learning-rate schedules as one pure function of the global step.

Both engines call :func:`lr_at` before every optimizer step and set the rate
themselves, so the schedule is identical by construction and its only state is the
step counter (which makes resume exact).
"""

from __future__ import annotations

import math

from alexbench.config import ScheduleConfig


def lr_at(step: int, steps_per_epoch: int, epochs: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of a run of ``epochs`` epochs."""
    total = max(1, steps_per_epoch * epochs)
    step = min(max(step, 0), total - 1)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.name != "onecycle" and warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    if cfg.name == "constant":
        return base_lr
    if cfg.name == "step":
        return base_lr * cfg.gamma ** (step // (cfg.step_epochs * steps_per_epoch))
    if cfg.name == "divide_by_epoch":
        # Keras's LearningRateScheduler(lambda epoch, lr: lr / (epoch + 1)) is handed the rate it set the
        # epoch before, so the divisions compound: epoch e (0-based) runs at lr / (e + 1)!.
        epoch = step // max(1, steps_per_epoch)
        if cfg.cycle_epochs:
            epoch %= cfg.cycle_epochs
        return base_lr / math.factorial(epoch + 1)
    final = base_lr / cfg.final_div_factor
    if cfg.name == "cosine":
        span = max(1, total - warmup)
        t = (step - warmup) / span
        return final + (base_lr - final) * 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: linear rise from lr/div_factor to lr over pct_start, then linear decay to lr/final_div_factor
    # (linear rather than cosine annealing, as in the fast CIFAR recipes this follows)
    start = base_lr / cfg.div_factor
    peak_step = max(1, int(cfg.pct_start * total))
    if step < peak_step:
        return start + (base_lr - start) * step / peak_step
    t = (step - peak_step) / max(1, total - 1 - peak_step)
    return base_lr + (final - base_lr) * t
