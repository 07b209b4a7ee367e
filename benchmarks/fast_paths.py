"""The torch engine's optimizer step and fp32 options, side by side in one run.

    python -m benchmarks.fast_paths --part 224     # alexnet 224 px b64: the engine at bf16 and fp32, with the
                                                   # fused and the loop optimizer step, against the seed's loop
    python -m benchmarks.fast_paths --part cifar   # alexnet_cifar b256: fused vs loop at bf16 and fp32, and
                                                   # fp32 without channels_last or with one thread
    python -m benchmarks.fast_paths --part fp32    # fp32 only: batch size, torch.compile and Keras's XLA on
                                                   # alexnet_cifar; channels_last on/off on alexnet 224 px
    python -m benchmarks.fast_paths --part step    # the optimizer step alone (SGD, Adam, AdamW; fused, loop)
                                                   # on alexnet's and alexnet_cifar's weights, in this process

Every configuration is its own worker process (:mod:`benchmarks.worker`); the rounds run
them in turn (A B C ... A B C ...), so each ratio pairs blocks measured minutes apart at
most. The report gives the median, the range and every round's figure. bf16 rows are
left out on a CPU without native bf16. A few minutes per part on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from alexbench.atomic import atomic_write_text, strict_json
from alexbench.frameworks import cpu_has_bf16
from benchmarks.harness import Config, Machine, interleave, paired_ratio, summary
from benchmarks.run import (
    DEFAULT_DATA,
    FULL,
    Group,
    _train_op,
    engine_spec,
    flags_text,
    log,
    machine_info,
    prepare_data,
)


def _variants(part: str, bf16: bool) -> list[tuple[str, dict]]:
    """(label, config or a plain-loop spec) for one part, the defaults first."""
    precisions = (["bf16"] if bf16 else []) + ["fp32"]
    if part == "224":
        base = {"model": "alexnet", "framework": "torch", "batch_size": 64}
        out = [(f"engine {p}, {'fused' if f else 'loop'} step", {**base, "precision": p, "optimizer": {"fused": f}})
               for p in precisions for f in (True, False)]
        return out + [("seed-notebook loop (fp32)", {"plain_torch": True})]
    if part == "fp32":  # what a CPU without bf16 can change: each paired with the fp32 default of its engine
        cifar = {"model": "alexnet_cifar", "batch_size": 256, "precision": "fp32"}
        big = {"model": "alexnet", "framework": "torch", "batch_size": 64, "precision": "fp32"}
        return [("torch cifar fp32", {**cifar, "framework": "torch"}),
                ("torch cifar fp32, batch 128", {**cifar, "framework": "torch", "batch_size": 128}),
                ("torch cifar fp32, batch 512", {**cifar, "framework": "torch", "batch_size": 512}),
                ("torch cifar fp32, torch.compile", {**cifar, "framework": "torch", "compile": True}),
                ("keras cifar fp32", {**cifar, "framework": "keras"}),
                ("keras cifar fp32, XLA", {**cifar, "framework": "keras", "compile": True}),
                ("torch 224 fp32", big),
                ("torch 224 fp32, channels_last off", {**big, "channels_last": False})]
    base = {"model": "alexnet_cifar", "framework": "torch", "batch_size": 256}
    out = [(f"{p}, {'fused' if f else 'loop'} step", {**base, "precision": p, "optimizer": {"fused": f}})
           for p in precisions for f in (True, False)]
    return out + [("fp32, fused, channels_last off", {**base, "precision": "fp32", "channels_last": False}),
                  ("fp32, fused, 1 thread", {**base, "precision": "fp32", "threads": 1})]


def _ratios(part: str, cfgs: dict[str, Config]) -> dict[str, dict]:
    out = {}
    for label, c in cfgs.items():
        if part == "224" and label.startswith("engine"):
            out[f"{label} / seed loop"] = paired_ratio(c, cfgs["seed-notebook loop (fp32)"])
        if label.endswith("fused step"):
            out[f"{label} / loop step"] = paired_ratio(c, cfgs[label.replace("fused step", "loop step")])
    if part == "fp32":
        for label in cfgs:
            ref = label.split(",")[0]
            if label != ref:
                out[f"{label} / {ref}"] = paired_ratio(cfgs[label], cfgs[ref])
    if part == "cifar":
        for label in ("fp32, fused, channels_last off", "fp32, fused, 1 thread"):
            out[f"{label} / fp32, fused step"] = paired_ratio(cfgs[label], cfgs["fp32, fused step"])
    return out


def measure(part: str, data: dict, rounds: int, steps: int, warm: int, log_dir: Path, profile: int = 0) -> dict:
    g = Group(log_dir)
    try:
        workers = {}
        for i, (label, cfg) in enumerate(_variants(part, cpu_has_bf16())):
            spec = ({"kind": "plain_torch", "data_dir": data["dir"], "batch_size": 64, "num_workers": 2}
                    if cfg.pop("plain_torch", False) else engine_spec(data, **cfg))
            workers[label] = g.add(f"{part}-{i}", spec)
        setup = g.ready()
        op = _train_op(steps, warm)
        cfgs = {label: Config(label, w, op) for label, w in workers.items()}
        # the machine is shared: wait briefly for quiet, then measure and record what others took
        machine = Machine(max_wait=3.0, budget=30.0)
        interleave(list(cfgs.values()), rounds, warm_round={"steps": 1, "warmup": 1}, log=log, machine=machine)
        profiles = {}
        for label in (label for label in cfgs if profile and label.endswith("fused step")):
            log(f"  profiling {label} ({profile} steps)")
            profiles[label] = workers[label].call({"op": "profile", "steps": profile})
        return {"setup_seconds": {k: v["setup_seconds"] for k, v in setup.items()},
                "ips": {label: summary(c) for label, c in cfgs.items()}, "ratios": _ratios(part, cfgs),
                "others_cpu_share": machine.others_shares, "profiles": profiles}
    finally:
        g.close()


def step_only(rounds: int) -> dict:
    """``optimizer.step()`` alone on each model's weights (channels_last, random gradients), the kinds in turn."""
    import statistics

    import torch

    from alexbench.models import create_model

    out: dict[str, Any] = {"threads": torch.get_num_threads(), "ms": {}}
    for model in ("alexnet", "alexnet_cifar"):
        net = create_model(model, "torch", num_classes=10).to(memory_format=torch.channels_last)
        params = list(net.parameters())
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        kinds: dict[str, Any] = {}
        for name, cls, kw in (("SGD nesterov", torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True}),
                              ("Adam", torch.optim.Adam, {"lr": 1e-3}), ("AdamW", torch.optim.AdamW, {"lr": 1e-3})):
            for fused in (True, False):
                opt = cls(params, weight_decay=5e-4, **kw, **({"fused": True} if fused else {}))
                opt.step()  # state allocated outside the timing
                kinds[f"{model}, {name}, {'fused' if fused else 'loop'}"] = (opt, [])
        for _ in range(rounds):
            for opt, times in kinds.values():
                t0 = time.perf_counter()
                opt.step()
                times.append(1e3 * (time.perf_counter() - t0))
        n = sum(p.numel() for p in params)
        for label, (_, times) in kinds.items():
            out["ms"][label] = {"median": statistics.median(times), "min": min(times), "max": max(times),
                                "rounds": times, "params": n}
    return out


def step_markdown(res: dict) -> str:
    lines = ["| model, optimizer, step | weights | ms per step, median | range | loop / fused |",
             "|---|--:|--:|--:|--:|"]
    ms = res["ms"]
    for label, s in ms.items():
        loop = ms.get(label.replace(", fused", ", loop"))
        ratio = f"{loop['median'] / s['median']:.1f}×" if label.endswith("fused") else ""
        lines.append(f"| {label} | {s['params'] / 1e6:.1f} M | {s['median']:.0f} | {s['min']:.0f}–{s['max']:.0f} | "
                     f"{ratio} |")
    return "\n".join(lines)


def markdown(res: dict) -> str:
    lines = ["| configuration | img/s, median | range | rounds |", "|---|--:|--:|---|"]
    for label, s in res["ips"].items():
        lines.append(f"| {label} | {s['median']:.1f} | {s['min']:.1f}–{s['max']:.1f} | "
                     f"{', '.join(f'{v:.1f}' for v in s['rounds'])} |")
    lines += ["", "| ratio (paired by round) | median | range | rounds |", "|---|--:|--:|---|"]
    for label, r in res["ratios"].items():
        lines.append(f"| {label} | {r['median']:.2f}× | {r['min']:.2f}–{r['max']:.2f}× | "
                     f"{', '.join(f'{v:.2f}' for v in r['rounds'])} |")
    for label, prof in res.get("profiles", {}).items():
        lines += ["", f"**{label}: one training step ({prof['tool']}; {prof['wall_ms_per_step']:.0f} ms/step wall)**",
                  "", "| op | ms/step | share | calls/step |", "|---|--:|--:|--:|"]
        lines += [f"| `{r['op']}` | {r['ms_per_step']:.1f} | {100 * r['share']:.1f}% | {r['calls_per_step']:.0f} |"
                  for r in prof["by_op"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fast_paths", description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["224", "cifar", "fp32", "step"], required=True)
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"dataset source (default: {DEFAULT_DATA})")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=None, help="timed steps per block (default: 3 at 224 px, 4 cifar)")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after the rounds, profile each fused-step engine over STEPS steps (torch.profiler)")
    p.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/fast_paths-<part>.json)")
    args = p.parse_args(argv)
    steps = args.steps or (3 if args.part == "224" else 4)
    out = Path(args.out or Path(__file__).parent / "results" / f"fast_paths-{args.part}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
                           "command": "python -m benchmarks.fast_paths " + " ".join(sys.argv[1:] if argv is None
                                                                                      else argv),
                           "rounds": args.rounds, "steps": steps}
    if args.part == "step":
        from alexbench.frameworks import import_torch

        import_torch()  # alexbench's thread settings, as in the engine
        res.update(step_only(args.rounds))
        m = res["machine"]
        print(f"{res['command']}, {res['started']}: {m.get('cpu')}, {res['threads']} threads, "
              f"torch {m['versions'].get('torch')}; {args.rounds} rounds\n")
        print(step_markdown(res))
        atomic_write_text(out, strict_json(res, indent=1, default=str))
        print(f"\nwrote {out}")
        return 0
    with tempfile.TemporaryDirectory(prefix="alexbench-fast-") as work:
        res["data"] = prepare_data(args.data, FULL, Path(work))
        res.update(measure(args.part, res["data"], args.rounds, steps, 1, out.parent / "logs",
                           args.profile))
    m = res["machine"]
    others = sorted(res["others_cpu_share"])
    print(f"{res['command']}, {res['started']}: {m.get('cpu')}, {m.get('cpus_usable')} cores "
          f"({flags_text(m.get('cpu_flags', {}))}), torch {m['versions'].get('torch')}; data: {res['data']['name']}; "
          f"{args.rounds} rounds of {steps} timed steps; other processes took "
          f"{100 * others[len(others) // 2]:.0f}% of the CPUs in the median block (max {100 * others[-1]:.0f}%)\n")
    print(markdown(res))
    atomic_write_text(out, strict_json(res, indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
