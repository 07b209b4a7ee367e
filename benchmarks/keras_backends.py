"""Keras backends side by side: compiled or eager steps, bf16 or fp32, and the four-way speed table.

``python -m benchmarks.keras_backends [--data SRC] [--rounds N] [--steps N] [--width W] [--batch B]
[--threads N] [--only compile|precision|fourway|batchnorm]``

Every configuration is an alexbench engine in its own worker process (one Keras backend
per process), fed by the shared batch stream: ``alexnet_cifar`` at batch 256, full width
(``--width``/``--batch`` scale it down where the machine cannot afford that).
Configurations compared with each other run interleaved, one timed block each per round
(see :mod:`benchmarks.harness`), so they share the machine's load; ratios are per round.

- ``compile``: on each backend, ``compile: true`` (XLA ``jit_compile`` on TensorFlow,
  ``jax.jit`` on JAX, ``torch.compile`` on torch) against ``compile: false``.
- ``precision``: on each backend, bf16 (``mixed_bfloat16``) against fp32, each with the
  backend's default ``compile``.
- ``fourway``: native PyTorch and Keras on each backend, defaults (precision auto, compile
  unset), then a short per-op profile of each.
- ``batchnorm``: native PyTorch, Keras on TensorFlow with Keras's own BatchNormalization
  (``keras_batchnorm: stock``) and with TensorFlow's fused kernel (``fused``), at bf16 (where
  the CPU has it) and at fp32, each precision its own interleaved group; ratios to PyTorch
  and fused / stock per round, then a short per-op profile of both Keras variants.
Writes ``benchmarks/results/keras-backends-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexbench.atomic import atomic_write_text, strict_json
from benchmarks.harness import REPO, BenchError, Config, Machine, Worker, interleave, paired_ratio, summary
from benchmarks.run import engine_spec, log, machine_info, prepare_data

BACKENDS = ("tensorflow", "jax", "torch")
LABEL = {"torch": "PyTorch", "tensorflow": "Keras (TensorFlow)", "jax": "Keras (JAX)", "keras-torch": "Keras (torch)"}
BN_LABEL = {"stock": "Keras (TensorFlow), stock BatchNorm", "fused": "Keras (TensorFlow), fused BatchNorm"}


@dataclass
class Settings:
    name: str = "keras-backends"
    train_images: int = 10_000
    test_images: int = 1_000
    rounds: int = 3
    warm: int = 2
    steps: int = 6
    profile_steps: int = 4
    width: float = 1.0
    batch: int = 256
    threads: int | None = None  # None: every usable core (the engines' default)


SETTINGS = Settings()


def _cfg(backend: str | None, **over: Any) -> dict:
    base = {"model": "alexnet_cifar", "batch_size": SETTINGS.batch, "threads": SETTINGS.threads,
            "model_options": {"width": SETTINGS.width}}
    if backend is None:
        return {**base, "framework": "torch", **over}
    return {**base, "framework": "keras", "keras_backend": backend, **over}


def _pairs(name: str, data: dict, s: Settings, log_dir: Path, machine: Machine,
           variants: dict[str, dict], also: tuple[tuple[str, str], ...] = ()) -> dict:
    """Interleave the variants of one backend (or the four engines); figures and ratios to the first,
    and ``a / b`` per round for each ``(a, b)`` label pair in ``also``."""
    workers = {label: Worker(f"{name}-{label}", engine_spec(data, **cfg), log_dir) for label, cfg in variants.items()}
    try:
        configs = [Config(label, w, {"op": "train", "steps": s.steps, "warmup": s.warm})
                   for label, w in workers.items()]
        log(f"{name}: {', '.join(variants)}")
        interleave(configs, s.rounds, warm_round={"steps": 1, "warmup": s.warm}, log=log, machine=machine)
        first = configs[0]
        out = {"variants": {c.label: {**summary(c), "config": variants[c.label],
                                      "first_step_seconds": (c.warm or {}).get("first_step_seconds"),
                                      "warm_wall_seconds": (c.warm or {}).get("wall_seconds")} for c in configs}}
        out["ratio_to_first"] = {c.label: paired_ratio(c, first) for c in configs[1:]}
        by = {c.label: c for c in configs}
        out["ratios"] = {f"{a} / {b}": paired_ratio(by[a], by[b]) for a, b in also}
        return out
    finally:
        for w in workers.values():
            w.close()


def _profiles(data: dict, s: Settings, log_dir: Path, variants: dict[str, dict]) -> dict:
    out = {}
    for label, cfg in variants.items():
        w = Worker(f"profile-{label}", engine_spec(data, **cfg), log_dir)
        try:
            w.wait_ready()
            out[label] = w.call({"op": "profile", "steps": s.profile_steps, "top": 12})
            log(f"profile {label}: {out[label].get('wall_ms_per_step', float('nan')):.0f} ms/step")
        except BenchError as exc:
            out[label] = {"error": str(exc)}
            log(f"profile {label} failed: {exc}")
        finally:
            w.close()
    return out


def _markdown(res: dict) -> str:
    lines = []
    for key, title in (("compile", "compile on vs off (ratio = compiled / eager img/s, per round)"),
                       ("precision", "bf16 vs fp32 (ratio = fp32 / bf16 img/s, per round)")):
        for b, g in res.get(key, {}).items():
            if "error" in g:
                lines.append(f"- {key} {b}: failed: {g['error'][:200]}")
                continue
            v = g["variants"]
            figs = ", ".join(f"{k} {x['median']:.0f} img/s [{x['min']:.0f}-{x['max']:.0f}]" for k, x in v.items())
            ratio = ", ".join(f"{k}: x{r['median']:.2f}" for k, r in g["ratio_to_first"].items())
            lines.append(f"- {title}, {b}: {figs}; {ratio}")
    g = res.get("fourway")
    if g and "variants" in g:
        lines += ["", "| engine | img/s (median) | range | vs PyTorch |", "|---|---|---|---|"]
        for k, x in g["variants"].items():
            r = g["ratio_to_first"].get(k, {"median": 1.0})
            lines.append(f"| {k} | {x['median']:.0f} | {x['min']:.0f}-{x['max']:.0f} | x{r['median']:.2f} |")
    for prec, g in res.get("batchnorm", {}).items():
        if "error" in g:
            lines.append(f"- batchnorm {prec}: failed: {g['error'][:200]}")
            continue
        lines += ["", f"BatchNorm, {prec}:", "", "| engine | img/s (median) | range | vs PyTorch |",
                  "|---|---|---|---|"]
        for k, x in g["variants"].items():
            r = g["ratio_to_first"].get(k, {"median": 1.0})
            lines.append(f"| {k} | {x['median']:.0f} | {x['min']:.0f}-{x['max']:.0f} | x{r['median']:.2f} |")
        for k, r in g.get("ratios", {}).items():
            lines.append(f"- {prec} {k}: x{r['median']:.2f} (rounds {', '.join(f'{v:.2f}' for v in r['rounds'])})")
    profiles = dict(res.get("profiles", {}))
    for prec, g in res.get("batchnorm", {}).items():
        profiles.update({f"{k} {prec}": p for k, p in g.get("profiles", {}).items()})
    for label, p in profiles.items():
        rows = p.get("by_op_type") or p.get("by_op") or []
        top = "; ".join(f"{r['op']} {r['ms_per_step']:.0f} ms" for r in rows[:6])
        lines.append(f"- profile {label}: {p.get('wall_ms_per_step', float('nan')):.0f} ms/step wall, "
                     f"{p.get('profiled_ms_per_step', float('nan')):.0f} ms in ops ({p.get('tool')}): {top}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.keras_backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/work/shared/data/cifar10-jpeg.tar.gz")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--width", type=float, default=1.0, help="alexnet_cifar's width option")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=None,
                   help="every engine's threads (default: all usable cores); 1 keeps a busy machine's other "
                        "processes from stalling a multi-threaded step")
    p.add_argument("--only", action="append", choices=["compile", "precision", "fourway", "batchnorm"])
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="the four-way table's precision for all four engines (fp32 emulates a CPU without bf16); "
                        "batchnorm: auto measures bf16 (where the CPU has it) and fp32, each in its own group")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    global SETTINGS
    s = SETTINGS = Settings(rounds=a.rounds, steps=a.steps, width=a.width, batch=a.batch, threads=a.threads)
    parts = a.only or ["compile", "precision", "fourway"]
    date = time.strftime("%Y-%m-%d")
    tag = "" if a.precision == "auto" else f"-{a.precision}"
    out_path = Path(a.out) if a.out else REPO / "benchmarks" / "results" / f"keras-backends-{date}{tag}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log_dir = out_path.parent / "logs-keras-backends"
    work = Path(tempfile.mkdtemp(prefix="alexbench-kb-"))
    t0 = time.perf_counter()
    res: dict[str, Any] = {"date": date, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "command": "python -m benchmarks.keras_backends " + " ".join(argv or sys.argv[1:]),
                           "machine": machine_info(), "settings": s.__dict__}
    try:
        res["data"] = prepare_data(a.data, s, work)
        machine = Machine()
        if "compile" in parts:
            res["compile"] = {}
            for b in BACKENDS:
                try:
                    res["compile"][b] = _pairs(f"compile-{b}", res["data"], s, log_dir, machine, {
                        "eager": _cfg(b, compile=False), "compiled": _cfg(b, compile=True)})
                except BenchError as exc:
                    res["compile"][b] = {"error": str(exc)}
                    log(f"compile {b} failed: {exc}")
        if "precision" in parts:
            res["precision"] = {}
            for b in BACKENDS:
                try:
                    res["precision"][b] = _pairs(f"precision-{b}", res["data"], s, log_dir, machine, {
                        "bf16": _cfg(b, precision="bf16"), "fp32": _cfg(b, precision="fp32")})
                except BenchError as exc:
                    res["precision"][b] = {"error": str(exc)}
                    log(f"precision {b} failed: {exc}")
        if "fourway" in parts:
            given = {"precision": a.precision}
            four = {LABEL["torch"]: _cfg(None, **given), LABEL["tensorflow"]: _cfg("tensorflow", **given),
                    LABEL["jax"]: _cfg("jax", **given), LABEL["keras-torch"]: _cfg("torch", **given)}
            res["fourway_precision"] = a.precision
            res["fourway"] = _pairs("fourway", res["data"], s, log_dir, machine, four)
            res["profiles"] = _profiles(res["data"], s, log_dir, four)
        if "batchnorm" in parts:
            res["batchnorm"] = {}
            for prec in _bn_precisions(a.precision):
                bn = {LABEL["torch"]: _cfg(None, precision=prec),
                      **{BN_LABEL[k]: _cfg("tensorflow", precision=prec, keras_batchnorm=k)
                         for k in ("stock", "fused")}}
                try:
                    res["batchnorm"][prec] = _pairs(f"batchnorm-{prec}", res["data"], s, log_dir, machine, bn,
                                                    also=((BN_LABEL["fused"], BN_LABEL["stock"]),))
                except BenchError as exc:
                    res["batchnorm"][prec] = {"error": str(exc)}
                    log(f"batchnorm {prec} failed: {exc}")
                    continue
                res["batchnorm"][prec]["profiles"] = _profiles(res["data"], s, log_dir,
                                                               {k: v for k, v in bn.items() if k in BN_LABEL.values()})
        res["others_cpu_share_blocks"] = {"median": summary_share(machine), "blocks": len(machine.others_shares)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["total_seconds"] = time.perf_counter() - t0
    md = _markdown(res)
    print(md)
    atomic_write_text(out_path, strict_json(res, indent=1, default=str))
    out_path.with_suffix(".md").write_text(
        f"Keras backends, {res['started']}: {res['machine'].get('cpu')}, {res['machine'].get('cpus_usable')} cores "
        f"({', '.join(res['machine'].get('bf16_flags', []))}); data: {res['data'].get('name')}; "
        f"{res['total_seconds'] / 60:.1f} min; other processes' CPU share in the median block: "
        f"{res['others_cpu_share_blocks']['median']}\n\n{md}\n")
    print(f"wrote {out_path}")
    return 0


def _bn_precisions(want: str) -> list[str]:
    """The batchnorm part's precisions: the one asked for, or bf16 (where the CPU has it) and fp32."""
    from alexbench.frameworks import cpu_has_bf16

    if want != "auto":
        return [want]
    return (["bf16"] if cpu_has_bf16() else []) + ["fp32"]


def summary_share(machine: Machine) -> float | None:
    from benchmarks.harness import median

    return median(machine.others_shares) if machine.others_shares else None


if __name__ == "__main__":
    sys.exit(main())
