"""The benchmark suite (everything but time-to-accuracy): ``python -m benchmarks.run [--quick]``.

It measures, side by side in one run (see :mod:`benchmarks.harness` for how):

1. ``alexnet`` at 224 px, batch 64: the alexbench torch engine against the seed's
   plain PyTorch loop (goal >= 2.5x), with the engine in fp32 as a third column.
2. The same for Keras: the alexbench keras engine against plain ``model.fit`` in fp32
   (goal >= 1.8x).
3. ``alexnet_cifar`` at 32 px, batch 256: training img/s for both engines and MFU
   against this machine's peak in the precision the step uses (bf16 where the CPU has
   it, else fp32), timed with the kernels of that engine's step (torch's for the torch
   engine, TensorFlow's for Keras) in the same rounds (goals 80% / 75%; see
   :mod:`benchmarks.mfu`). The CPU flags that decide this (avx2, avx512f, avx512_bf16,
   amx_bf16) and the precision are recorded with the results.
4. Evaluation img/s (batch 500) and the share of step time spent waiting for data,
   both in the benchmark's own loop and in real ``alexbench.train.train`` runs
   (goal <= 5%).
5. Peak RSS of short real training runs, one fresh process each, for every model and
   framework.
6. Fast paths on and off: bf16, channels_last, torch.compile, XLA, prefetch.

Where a goal is missed, the per-op profiles it collects say where the time goes.
Prints a table and writes ``benchmarks/results/<date>.json`` and ``<date>.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alexbench.atomic import atomic_write_text, strict_json
from benchmarks.arrays import save_arrays
from benchmarks.harness import REPO, BenchError, Config, Machine, Worker, interleave, median, paired_ratio, summary
from benchmarks.mfu import CONV_SHAPE, default_precision, mfu, training_flops

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
GOALS = {"torch_224_speedup": 2.5, "keras_224_speedup": 1.8, "mfu_torch": 0.80, "mfu_keras": 0.75,
         "data_share": 0.05}


@dataclass
class Settings:
    """How much to measure. ``full`` aims at ~12 minutes on a quiet 2-core CPU; ``quick`` is a smoke run."""

    name: str
    rounds: int  # headline comparisons (224-px speed-ups, alexnet_cifar img/s, MFU, eval)
    rounds_fast_paths: int  # fast paths on/off
    warm_224: int  # untimed steps at the start of every block
    steps_224: int  # timed steps per block
    warm_cifar: int
    steps_cifar: int
    steps_fast_paths: int
    eval_images: int
    gemm_reps: int
    gemm_sizes: tuple[int, ...]
    train_images: int  # images the workers draw batches from (a seeded, shuffled slice)
    test_images: int
    slow_paths: bool  # torch.compile and XLA (torch.compile alone compiles for about a minute)
    profile_steps: int
    trainruns: list[dict] = field(default_factory=list)


def _trainruns(full: bool) -> list[dict]:
    """Short real runs: alexnet_cifar as in the standard preset; 224-px models on a few batches."""
    runs = []
    for fw in ("torch", "keras"):
        runs.append({"model": "alexnet_cifar", "framework": fw, "epochs": 1, "batch_size": 256,
                     "eval_batch_size": 500, "max_train_images": 5000 if full else 1024, "val_fraction": 0.02,
                     "max_test_images": None if full else 1000})
    for fw in ("torch", "keras"):
        runs.append({"model": "alexnet", "framework": fw, "epochs": 1, "batch_size": 64, "eval_batch_size": 500,
                     "max_train_images": 640 if full else 192, "val_fraction": 0.0,
                     "max_test_images": 500 if full else 100})
    if full:
        for model, bs in (("alexnet2012", 64), ("vgg16", 32)):
            for fw in ("torch", "keras"):
                # two steps and 100 test images: enough for the peak of a training step, not of a
                # batch-500 evaluation at 224 px (the table shows the evaluation batch)
                runs.append({"model": model, "framework": fw, "epochs": 1, "batch_size": bs, "eval_batch_size": 500,
                             "max_train_images": 2 * bs, "val_fraction": 0.0, "max_test_images": 100})
    return runs


FULL = Settings("full", rounds=5, rounds_fast_paths=3, warm_224=1, steps_224=5, warm_cifar=2, steps_cifar=6,
                steps_fast_paths=4, eval_images=5000, gemm_reps=5, gemm_sizes=(2048, 4096), train_images=12800,
                test_images=10000, slow_paths=True, profile_steps=3, trainruns=_trainruns(True))
QUICK = Settings("quick", rounds=1, rounds_fast_paths=1, warm_224=1, steps_224=2, warm_cifar=1, steps_cifar=3,
                 steps_fast_paths=2, eval_images=1000, gemm_reps=3, gemm_sizes=(2048,), train_images=2560,
                 test_images=1000, slow_paths=False, profile_steps=2, trainruns=_trainruns(False))
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{(time.perf_counter() - _T0) / 60:5.1f} min] {msg}", file=sys.stderr, flush=True)


# -- machine, versions, data -----------------------------------------------------------------
def machine_info() -> dict:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        flags = fields.get("Flags", "").split()
    except (OSError, subprocess.SubprocessError):
        from alexbench.frameworks import cpu_name

        info["cpu"], flags = cpu_name(), []
    info["cpus_online"] = os.cpu_count()
    info["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["bf16_flags"] = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16") if f in flags]
    # the flags that decide which kernels run: fp32 SIMD width, native bf16 (and so precision: auto)
    info["cpu_flags"] = {f: f in flags for f in CPU_FLAGS}
    info["precision_auto"] = default_precision()
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    versions = {}
    for dist in ("torch", "torchvision", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pillow", "alexbench"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info["versions"] = versions
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        info["git_commit"] = commit or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


class DataSlice(Protocol):
    """What :func:`prepare_data` reads of a benchmark's settings (this suite's or another benchmark's)."""

    @property
    def train_images(self) -> int: ...
    @property
    def test_images(self) -> int: ...


def prepare_data(source: str | None, s: DataSlice, work: Path) -> dict:
    """Write the benchmark's arrays (a fixed slice of the real data) where the workers can map them.

    Throughput does not depend on pixel values, so without the dataset the suite still runs
    on random uint8 images; the output then says so on every table.
    """
    desc: dict[str, Any]
    try:
        from alexbench.data import load_dataset

        ds = load_dataset(source)
        x_tr, y_tr, x_te, y_te = ds.x_train, ds.y_train, ds.x_test, ds.y_test
        desc = {"name": ds.name, "source": ds.source, "sha256": ds.sha256, "random": False,
                "train_total": int(len(y_tr)), "test_total": int(len(y_te))}
    except Exception as exc:  # noqa: BLE001 - fall back, and say so
        log(f"warning: could not load {source}: {type(exc).__name__}: {exc}; using random uint8 images")
        rng = np.random.default_rng(0)
        x_tr = rng.integers(0, 256, (s.train_images, 32, 32, 3), dtype=np.uint8)
        y_tr = rng.integers(0, 10, s.train_images).astype(np.int64)
        x_te = rng.integers(0, 256, (s.test_images, 32, 32, 3), dtype=np.uint8)
        y_te = rng.integers(0, 10, s.test_images).astype(np.int64)
        desc = {"name": "random uint8 (dataset unavailable)", "source": None, "random": True,
                "error": f"{type(exc).__name__}: {exc}"}
    data_dir = work / "arrays"
    data_dir.mkdir(parents=True, exist_ok=True)
    # a seeded, shuffled slice: image folders list the images class by class
    rng = np.random.default_rng(0)
    tr = np.sort(rng.permutation(len(y_tr))[: s.train_images])
    te = np.sort(rng.permutation(len(y_te))[: s.test_images])
    save_arrays(data_dir, {"x_train": x_tr[tr], "y_train": y_tr[tr], "x_test": x_te[te], "y_test": y_te[te]})
    desc["num_classes"] = int(max(int(y_tr.max()), int(y_te.max())) + 1)
    desc.update({"benchmark_train_images": int(min(s.train_images, len(y_tr))),
                 "benchmark_test_images": int(min(s.test_images, len(y_te))), "dir": str(data_dir)})
    return desc


def engine_spec(data: dict, **cfg: Any) -> dict:
    return {"kind": "engine", "data_dir": data["dir"], "num_classes": data["num_classes"],
            "config": {"seed": 0, **cfg}, "lr": 1e-3}


# -- the groups ------------------------------------------------------------------------------
class Group:
    """Workers started together, measured together, closed together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.workers: dict[str, Worker] = {}

    def add(self, name: str, spec: dict) -> Worker:
        self.workers[name] = Worker(name, spec, self.log_dir)
        return self.workers[name]

    def ready(self) -> dict:
        t0 = time.perf_counter()
        out = {name: w.wait_ready() for name, w in self.workers.items()}
        log(f"  {len(out)} workers ready in {time.perf_counter() - t0:.0f}s")
        return out

    def close(self) -> None:
        for w in self.workers.values():
            w.close()


def _train_op(steps: int, warm: int, **extra: Any) -> dict:
    return {"op": "train", "steps": steps, "warmup": warm, **extra}


def group_224(framework: str, s: Settings, data: dict, log_dir: Path, machine: Machine) -> dict:
    """alexnet at 224 px, batch 64: alexbench engine (default fast paths, and fp32) vs the plain loop."""
    log(f"[{framework} alexnet 224px] engine vs plain {'PyTorch loop' if framework == 'torch' else 'model.fit'}")
    g = Group(log_dir)
    d = data["dir"]
    try:
        base = {"model": "alexnet", "framework": framework, "batch_size": 64}
        eng = g.add(f"{framework}224-engine", engine_spec(data, **base))
        # the fp32 engine splits torch's gain into data path vs bf16 (keras: see the alexnet_cifar fast paths;
        # a third 3-GB Keras process would also crowd a shared 24 GB machine)
        eng32 = g.add(f"{framework}224-engine-fp32", engine_spec(data, **base, precision="fp32")) \
            if framework == "torch" else None
        if framework == "torch":
            plain = g.add("torch224-plain", {"kind": "plain_torch", "data_dir": d, "batch_size": 64,
                                             "num_workers": 2})
        else:
            plain = g.add("keras224-plain", {"kind": "plain_keras", "data_dir": d, "batch_size": 64,
                                             "batches": s.warm_224 + s.steps_224})
        setup = g.ready()
        op = _train_op(s.steps_224, s.warm_224)
        cfgs = [Config("engine (default: bf16 where native)", eng, op), Config("plain", plain, op)]
        if eng32 is not None:
            cfgs.append(Config("engine, precision=fp32", eng32, op))
        interleave(cfgs, s.rounds, warm_round={"steps": 1, "warmup": 1}, log=log, machine=machine)
        e, p = cfgs[:2]
        e32 = cfgs[2] if eng32 is not None else None
        step = median([r["step_seconds_median"] for r in e.results])
        prep = eng.call({"op": "prep", "batches": 4})["seconds_per_batch"]
        out = {
            "engine": summary(e), "plain": summary(p), "speedup": paired_ratio(e, p),
            "engine_data_share": median([r["data_share"] for r in e.results]),
            "engine_prep_seconds_per_batch": prep, "engine_step_seconds": step,
            "engine_prep_share": prep / step,
            "plain_details": {k: p.results[-1].get(k) for k in ("num_workers", "threads", "jit_compile")},
            "setup_seconds": {k: v["setup_seconds"] for k, v in setup.items()},
            "max_rss_bytes": {c.label: c.results[-1]["max_rss_bytes"] for c in cfgs},
        }
        if e32 is not None:
            out.update({"engine_fp32": summary(e32), "speedup_fp32_engine": paired_ratio(e32, p),
                        "bf16_over_fp32": paired_ratio(e, e32)})
        goal = GOALS[f"{framework}_224_speedup"]
        if out["speedup"]["median"] < goal:
            log("  goal missed: profiling the engine step")
            out["engine_profile"] = eng.call({"op": "profile", "steps": s.profile_steps})
        return out
    finally:
        g.close()


def group_cifar(s: Settings, data: dict, log_dir: Path, machine: Machine) -> dict:
    """alexnet_cifar, batch 256: both engines, the GEMM peak, evaluation, and the fast paths on/off.

    Two interleaved passes over the same workers: the headline figures (img/s, MFU with the
    GEMM peak of the same round, evaluation) get more rounds; the fast paths get fewer,
    each variant paired with its default from the same round.
    """
    log("[alexnet_cifar 32px] both engines, GEMM peak, eval, fast paths")
    from alexbench.models import flops_per_image

    fwd = flops_per_image("alexnet_cifar", 10)
    g = Group(log_dir)
    base = {"model": "alexnet_cifar", "batch_size": 256}
    try:
        t = g.add("torch-default", engine_spec(data, framework="torch", **base))
        k = g.add("keras-default", engine_spec(data, framework="keras", **base))
        precision = default_precision()  # what the default engines below run in
        gemm = g.add("gemm", {"kind": "gemm", "sizes": list(s.gemm_sizes), "reps": s.gemm_reps,
                              "precision": precision})
        gemm_tf = g.add("gemm-tf", {"kind": "gemm_tf", "sizes": list(s.gemm_sizes), "reps": s.gemm_reps,
                                    "precision": precision})
        t32 = g.add("torch-fp32", engine_spec(data, framework="torch", precision="fp32", **base))
        tncl = g.add("torch-no-channels-last", engine_spec(data, framework="torch", channels_last=False, **base))
        k32 = g.add("keras-fp32", engine_spec(data, framework="keras", precision="fp32", **base))
        if s.slow_paths:
            tc = g.add("torch-compile", engine_spec(data, framework="torch", compile=True, **base))
            kx = g.add("keras-xla", engine_spec(data, framework="keras", compile=True, **base))
        setup = g.ready()
        op = _train_op(s.steps_cifar, s.warm_cifar)
        eval_op = {"op": "eval", "images": s.eval_images, "batch": 500}
        warm = {"steps": 1, "warmup": 1, "images": 500}
        head = {
            "torch": Config("torch (default)", t, op),
            "gemm": Config(f"{precision} peak (torch)", gemm, {"op": "gemm"}),
            "gemm_tf": Config(f"{precision} peak (tensorflow)", gemm_tf, {"op": "gemm"}),
            "keras": Config("keras (default)", k, op),
            "torch_eval": Config("torch eval", t, eval_op),
            "keras_eval": Config("keras eval", k, eval_op),
        }
        log(" headline pass")
        interleave(list(head.values()), s.rounds, warm_round=warm, log=log, machine=machine)
        fop = _train_op(s.steps_fast_paths, s.warm_cifar)
        fp = {
            "torch": Config("torch (default)", t, fop),
            "torch_fp32": Config("torch precision=fp32", t32, fop),
            "torch_no_cl": Config("torch channels_last=false", tncl, fop),
            "torch_no_prefetch": Config("torch, prefetch off", t, {**fop, "prefetch": False}),
            "keras": Config("keras (default)", k, fop),
            "keras_fp32": Config("keras precision=fp32", k32, fop),
        }
        if s.slow_paths:
            fp["torch_compile"] = Config("torch compile=true", tc, fop)
            fp["keras_xla"] = Config("keras compile=true (XLA)", kx, fop)
        log(" fast-path pass")
        interleave(list(fp.values()), s.rounds_fast_paths, warm_round=warm, log=log, machine=machine)
        gemm_fp32 = gemm.call({"op": "gemm", "fp32": True})
        out: dict[str, Any] = {"forward_flops_per_image": fwd, "precision": precision,
                               "gemm_last_with_fp32": gemm_fp32,
                               "setup_seconds": {k_: v["setup_seconds"] for k_, v in setup.items()}}
        for fw, peak_key in (("torch", "gemm"), ("keras", "gemm_tf")):
            res = head[fw].results
            peaks = [r["flops"] for r in head[peak_key].results]
            mfus = [mfu(r["ips"], fwd, peak) for r, peak in zip(res, peaks)]
            last = head[peak_key].results[-1]
            out[fw] = {"train": summary(head[fw]), "mfu": {"median": median(mfus), "rounds": mfus},
                       "precision": res[-1].get("precision"),
                       "peak": {**summary(head[peak_key], "flops"), "precision": last["precision"],
                                "kernels": last["kernels"],
                                "matmul": max(last["matmul_by_size"].values()), "conv3x3": last.get("conv3x3")},
                       "training_flops": median([training_flops(r["ips"], fwd) for r in res]),
                       "data_share": median([r["data_share"] for r in res]),
                       "step_seconds": median([r["step_seconds_median"] for r in res]),
                       "eval": summary(head[f"{fw}_eval"]), "max_rss_bytes": res[-1]["max_rss_bytes"]}
        pairs = {
            "torch bf16 vs fp32": ("torch", "torch_fp32", "precision=auto (bf16)", "fp32"),
            "torch channels_last on vs off": ("torch", "torch_no_cl", "channels_last=true", "false"),
            "torch prefetch on vs off": ("torch", "torch_no_prefetch", "prefetch thread", "inline"),
            "keras bf16 vs fp32": ("keras", "keras_fp32", "precision=auto (mixed_bfloat16)", "float32"),
        }
        if s.slow_paths:
            pairs["torch compile on vs off"] = ("torch_compile", "torch", "compile=true", "compile=false")
            pairs["keras XLA on vs off"] = ("keras_xla", "keras", "compile=true (XLA)", "compile=false")
        out["fast_paths"] = {}
        for name, (on_key, off_key, on_label, off_label) in pairs.items():
            on, off = fp[on_key], fp[off_key]
            entry = {"on": on_label, "off": off_label, "on_ips": summary(on)["median"],
                     "off_ips": summary(off)["median"], "speedup": paired_ratio(on, off),
                     "others_cpu_share_median": median([summary(on)["others_cpu_share_median"],
                                                        summary(off)["others_cpu_share_median"]])}
            if on.warm and on.warm.get("first_step_seconds") is not None:
                entry["on_first_step_seconds"] = on.warm["first_step_seconds"]
                entry["off_first_step_seconds"] = (off.warm or {}).get("first_step_seconds")
            out["fast_paths"][name] = entry
        stream = t.call({"op": "stream", "batches": 20})["seconds_per_batch"]
        out["stream_seconds_per_batch"] = stream
        out["stream_share_if_inline"] = {fw: stream / out[fw]["step_seconds"] for fw in ("torch", "keras")}
        log("  profiling training steps of each engine")
        out["torch"]["profile"] = t.call({"op": "profile", "steps": s.profile_steps})
        out["keras"]["profile"] = k.call({"op": "profile", "steps": s.profile_steps})
        return out
    finally:
        g.close()


def train_runs(s: Settings, source: str | None, work: Path) -> list[dict]:
    """Real ``train`` runs, each in a fresh process: data share, evaluation speed, peak RSS."""
    log("[train runs] alexbench.train.train, one fresh process each")
    results = []
    for i, cfg in enumerate(s.trainruns):
        cfg = {k: v for k, v in cfg.items() if v is not None}
        out_dir = work / f"run{i}-{cfg['model']}-{cfg['framework']}"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "benchmarks.trainrun", json.dumps(cfg), str(source), str(out_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"})
        wall = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = "\n".join((proc.stderr or "").splitlines()[-8:])
            log(f"  {cfg['model']}/{cfg['framework']}: FAILED ({proc.returncode})\n{tail}")
            results.append({"config": cfg, "error": tail, "wall_seconds": wall})
            continue
        r = json.loads(lines[-1])
        r["config"], r["wall_seconds"] = cfg, wall
        log(f"  {cfg['model']:<14s} {cfg['framework']:<6s} peak RSS {r['peak_rss_bytes'] / 2**30:5.2f} GiB, "
            f"data share {r['data_share'] if r['data_share'] is not None else float('nan'):.3%}, "
            f"eval {r['eval_images_per_second']:.0f} img/s ({wall:.0f}s)")
        results.append(r)
    return results


# -- table -----------------------------------------------------------------------------------
def flags_text(flags: dict[str, bool]) -> str:
    """``{"avx2": True, "amx_bf16": False}`` -> ``"avx2 yes, amx_bf16 no"``."""
    return ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in flags.items())


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def _met(value: float | None, goal: float, higher: bool = True) -> str:
    if value is None or value != value:
        return "not measured"
    return "met" if (value >= goal if higher else value <= goal) else "NOT met"


def build_tables(res: dict) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    goals = [["goal", "measured", "target", "status"]]
    for fw, key in (("torch", "torch_224"), ("keras", "keras_224")):
        g = res.get(key)
        if g:
            sp = g["speedup"]
            goals.append([f"{fw}: alexnet 224px b64, engine vs plain {'loop' if fw == 'torch' else 'model.fit'}",
                          f"{sp['median']:.2f}x ({g['engine']['median']:.1f} vs {g['plain']['median']:.1f} img/s)",
                          f">= {GOALS[key + '_speedup']}x", _met(sp["median"], GOALS[key + "_speedup"])])
    c = res.get("cifar")
    if c:
        for fw in ("torch", "keras"):
            m = c[fw]["mfu"]["median"]
            pk = c[fw]["peak"]
            goals.append([f"{fw}: alexnet_cifar 32px b256 MFU ({c[fw].get('precision')} step)",
                          f"{_pct(m)} ({c[fw]['train']['median']:.0f} img/s x 3 x "
                          f"{c['forward_flops_per_image'] / 1e6:.0f} MFLOP / {pk['median'] / 1e9:.0f} "
                          f"GFLOP/s {pk['precision']} peak, {pk['kernels']})", f">= {GOALS['mfu_' + fw]:.0%}",
                          _met(m, GOALS["mfu_" + fw])])
    runs = [r for r in res.get("train_runs", []) if "error" not in r]
    for r in runs:
        if r["model"] == "alexnet_cifar":
            goals.append([f"{r['framework']}: data share of step time, alexnet_cifar (alexbench train loop)",
                          _pct(r["data_share"]), "<= 5%", _met(r["data_share"], GOALS["data_share"], higher=False)])
    for fw in ("torch", "keras"):
        g = res.get(f"{fw}_224")
        if g:
            share = (g["engine_data_share"] or 0.0) + g["engine_prep_share"]
            goals.append([f"{fw}: data share, alexnet 224px (wait {_pct(g['engine_data_share'])} + in-step "
                          f"normalise/resize {_pct(g['engine_prep_share'])})", _pct(share), "<= 5%",
                          _met(share, GOALS["data_share"], higher=False)])
    tables["goals"] = goals

    speed = [["measurement", "torch", "keras"]]
    for key, label in (("engine", "alexnet 224 b64: engine, default (img/s)"),
                       ("engine_fp32", "alexnet 224 b64: engine, fp32 (img/s)"),
                       ("plain", "alexnet 224 b64: plain loop / model.fit, fp32 (img/s)")):
        speed.append([label] + [f"{res[f'{fw}_224'][key]['median']:.1f}" if key in res.get(f"{fw}_224", {}) else "-"
                                for fw in ("torch", "keras")])
    if c:
        speed.append(["alexnet_cifar b256: training (img/s)"] + [f"{c[fw]['train']['median']:.0f}"
                                                                 for fw in ("torch", "keras")])
        speed.append(["alexnet_cifar b256: achieved training GFLOP/s"] +
                     [f"{c[fw]['training_flops'] / 1e9:.0f}" for fw in ("torch", "keras")])
        speed.append(["alexnet_cifar b500: evaluation (img/s)"] + [f"{c[fw]['eval']['median']:.0f}"
                                                                   for fw in ("torch", "keras")])
        speed.append(["alexnet_cifar: data wait share in the benchmark loop"] +
                      [_pct(c[fw]["data_share"]) for fw in ("torch", "keras")])
        speed.append(["alexnet_cifar: stream cost per batch / step time (if it were inline)"] +
                     [_pct(c["stream_share_if_inline"][fw]) for fw in ("torch", "keras")])
        g = c["gemm_last_with_fp32"]
        prec = c["torch"]["peak"]["precision"]
        speed.append([f"{prec} peak used for MFU: torch / TensorFlow kernels (GFLOP/s)"] +
                     [f"{c[fw]['peak']['median'] / 1e9:.0f}" for fw in ("torch", "keras")])
        speed.append([f"{prec} matmul, best square size (GFLOP/s, last round)"] +
                     [f"{c[fw]['peak']['matmul'] / 1e9:.0f}" for fw in ("torch", "keras")])
        speed.append([f"{prec} conv 3x3, N/C_in/C_out/H=W {'/'.join(map(str, CONV_SHAPE))} (GFLOP/s, last round)"] +
                     [f"{c[fw]['peak']['conv3x3'] / 1e9:.0f}" for fw in ("torch", "keras")])
        speed.append([f"fp32 GEMM, {g['fp32_size']}^2 (GFLOP/s, reference)", f"{g['fp32_flops'] / 1e9:.0f}", ""])
    tables["speed"] = speed

    if c:
        fp = [["fast path", "on (img/s)", "off (img/s)", "on/off", "first step on / off (s)"]]
        for name, e in c["fast_paths"].items():
            first = ""
            if e.get("on_first_step_seconds") is not None and e.get("off_first_step_seconds") is not None:
                first = f"{e['on_first_step_seconds']:.1f} / {e['off_first_step_seconds']:.1f}"
            fp.append([f"{name} ({e['on']} / {e['off']})", f"{e['on_ips']:.0f}", f"{e['off_ips']:.0f}",
                       f"{e['speedup']['median']:.2f}x", first])
        for fw in ("torch", "keras"):
            g = res.get(f"{fw}_224")
            if g and "bf16_over_fp32" in g:
                fp.append([f"{fw} alexnet 224: bf16 vs fp32 engine", f"{g['engine']['median']:.1f}",
                           f"{g['engine_fp32']['median']:.1f}", f"{g['bf16_over_fp32']['median']:.2f}x", ""])
        tables["fast_paths"] = fp

    if runs:
        rss = [["model", "framework", "batch / eval batch", "train imgs / test imgs", "peak RSS (GiB)",
                "train img/s", "eval img/s", "data share"]]
        for r in runs:
            ips = r["images_per_second"]
            eval_bs = min(r["config"].get("eval_batch_size", 500), r["test_images"])
            rss.append([r["model"], r["framework"], f"{r['config']['batch_size']} / {eval_bs}",
                        f"{r['train_images']} / {r['test_images']}", f"{r['peak_rss_bytes'] / 2 ** 30:.2f}",
                        f"{ips:.0f}" if ips else "n/a", f"{r['eval_images_per_second']:.0f}", _pct(r["data_share"])])
        tables["train_runs"] = rss
    return tables


def render(tables: dict[str, list[list[str]]], markdown: bool) -> str:
    out = []
    for name, rows in tables.items():
        out.append(f"\n{name.replace('_', ' ')}:" if not markdown else f"\n**{name.replace('_', ' ')}**\n")
        if markdown:
            out.append("| " + " | ".join(rows[0]) + " |")
            out.append("|" + "|".join("---" for _ in rows[0]) + "|")
            out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        else:
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for j, r in enumerate(rows):
                out.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
                if j == 0:
                    out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def profile_markdown(res: dict, top: int = 10) -> str:
    """The top rows of each collected profile, as Markdown."""
    out = []
    c = res.get("cifar", {})
    for fw in ("torch", "keras"):
        prof = c.get(fw, {}).get("profile")
        if not prof:
            continue
        rows = prof.get("by_op") if fw == "torch" else prof.get("by_op_type")
        out.append(f"\n**{fw} alexnet_cifar b256, one training step ({prof['tool']}; "
                   f"{prof['wall_ms_per_step']:.0f} ms/step wall, {prof['profiled_ms_per_step']:.0f} ms in ops)**\n")
        out.append("| op | ms/step | share |")
        out.append("|---|---|---|")
        out += [f"| `{r['op']}` | {r['ms_per_step']:.1f} | {100 * r['share']:.1f}% |" for r in rows[:top]]
    for key in ("torch_224", "keras_224"):
        prof = res.get(key, {}).get("engine_profile")
        if prof:
            rows = prof.get("by_op") or prof.get("by_op_type")
            out.append(f"\n**{key} engine step ({prof['tool']}; {prof['wall_ms_per_step']:.0f} ms/step)**\n")
            out.append("| op | ms/step | share |")
            out.append("|---|---|---|")
            out += [f"| `{r['op']}` | {r['ms_per_step']:.1f} | {100 * r['share']:.1f}% |" for r in rows[:top]]
    return "\n".join(out)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short smoke run (one round, few steps, no compile/XLA)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"dataset source (default: {DEFAULT_DATA})")
    p.add_argument("--only", action="append", choices=["torch_224", "keras_224", "cifar", "train_runs"],
                   help="run only these parts (repeatable)")
    p.add_argument("--out", default=None, help="JSON output path (default: benchmarks/results/<date>[-quick].json)")
    args = p.parse_args(argv)
    s = QUICK if args.quick else FULL
    parts = args.only or ["torch_224", "keras_224", "cifar", "train_runs"]
    date = time.strftime("%Y-%m-%d")
    out_path = Path(args.out) if args.out else REPO / "benchmarks" / "results" / (
        f"{date}{'-quick' if args.quick else ''}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="alexbench-bench-"))
    log_dir = out_path.parent / "logs"
    if log_dir.exists():
        shutil.rmtree(log_dir)
    t_start = time.perf_counter()
    res: dict[str, Any] = {"date": date, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "command": "python -m benchmarks.run "
                                      + " ".join(argv if argv is not None else sys.argv[1:]),
                           "settings": asdict(s), "machine": machine_info(), "goals": GOALS}
    try:
        res["data"] = prepare_data(args.data, s, work)
        log(f"data: {res['data']['name']} ({res['data']['benchmark_train_images']} train / "
            f"{res['data']['benchmark_test_images']} test images used by the workers)")
        machine = Machine()
        if "torch_224" in parts:
            res["torch_224"] = group_224("torch", s, res["data"], log_dir, machine)
        if "keras_224" in parts:
            res["keras_224"] = group_224("keras", s, res["data"], log_dir, machine)
        if "cifar" in parts:
            res["cifar"] = group_cifar(s, res["data"], log_dir, machine)
        res["quiet_wait_seconds"] = machine.waited_total
        res["others_cpu_share_blocks"] = {"median": median(machine.others_shares),
                                          "max": max(machine.others_shares, default=float("nan")),
                                          "blocks": len(machine.others_shares)}
        if "train_runs" in parts:
            res["train_runs"] = train_runs(s, args.data if not res["data"]["random"] else None, work)
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        res["error"] = str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["total_seconds"] = time.perf_counter() - t_start
    tables = build_tables(res)
    res["tables"] = tables
    load = res.get("others_cpu_share_blocks", {})
    flags = res["machine"].get("cpu_flags", {})
    header = (f"alexbench benchmarks, {res['started']}, {s.name} settings: {res['machine'].get('cpu')}, "
              f"{res['machine'].get('cpus_usable')} cores (flags: "
              f"{flags_text(flags)}; precision: auto = "
              f"{res['machine'].get('precision_auto')}); "
              f"data: {res.get('data', {}).get('name')}; {res['total_seconds'] / 60:.1f} min; other processes "
              f"took {_pct(load.get('median'))} of the CPUs in the median timed block (max {_pct(load.get('max'))})")
    print(header)
    print(render(tables, markdown=False))
    atomic_write_text(out_path, strict_json(res, indent=1, default=str))
    md = out_path.with_suffix(".md")
    md.write_text(header + "\n" + render(tables, markdown=True) + "\n" + profile_markdown(res) + "\n")
    print(f"\nwrote {out_path} and {md}")
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
