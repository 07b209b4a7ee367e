"""Smoke test of the benchmark suite's machinery (not its figures): workers, rounds, tables.

Runs a tiny GEMM worker and a tiny alexnet_cifar torch engine worker (1/8 width, fp32)
through one interleaved round, the stream and evaluation requests, and the table
rendering. The suite itself (``python -m benchmarks.run``) is not part of ``make test``.
"""

from __future__ import annotations

import numpy as np
import pytest


def test_benchmark_modules_import_no_cycle():
    """Every benchmarks module imports only modules below it (no pair imports each other)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    deps: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):  # function-level imports count too
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("benchmarks."))
        deps[path.stem] = names

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in deps.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen

    assert "baselines" in deps["worker"]  # the graph was read
    assert [m for m in deps if m in reach(m)] == []


def test_worker_rounds_and_tables(tmp_path):
    from benchmarks.arrays import load_arrays, save_arrays
    from benchmarks.harness import Config, Machine, Worker, interleave, paired_ratio, summary
    from benchmarks.run import build_tables, render

    rng = np.random.default_rng(0)
    data = tmp_path / "arrays"
    data.mkdir()
    arrays = {"x_train": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), "y_train": rng.integers(0, 10, 64),
              "x_test": rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), "y_test": rng.integers(0, 10, 32)}
    save_arrays(data, arrays)
    back = load_arrays(data)
    assert all(np.array_equal(back[k], arrays[k]) for k in arrays) and back["y_train"].dtype == np.int64

    logs = tmp_path / "logs"
    gemm = Worker("gemm", {"kind": "gemm", "sizes": [128], "reps": 2, "threads": 1}, logs)
    eng = Worker("engine", {"kind": "engine", "data_dir": str(data), "lr": 1e-3, "config": {
        "model": "alexnet_cifar", "framework": "torch", "model_options": {"width": 0.125}, "batch_size": 16,
        "precision": "fp32", "threads": 1, "seed": 0}}, logs)
    try:
        train = Config("engine", eng, {"op": "train", "steps": 2, "warmup": 1})
        no_prefetch = Config("engine, no prefetch", eng, {"op": "train", "steps": 2, "warmup": 1, "prefetch": False})
        peak = Config("gemm", gemm, {"op": "gemm"})
        interleave([train, no_prefetch, peak], rounds=1, warm_round={"steps": 1, "warmup": 0}, log=lambda m: None,
                   machine=Machine(max_wait=0.0))  # no waiting for a quiet machine in a test
        assert train.results[0]["images"] == 32 and train.results[0]["ips"] > 0
        assert 0.0 <= train.results[0]["data_share"] <= 1.0
        assert train.results[0]["cpu_seconds"] > 0
        assert peak.results[0]["flops"] > 0
        assert paired_ratio(train, no_prefetch)["median"] > 0
        assert summary(peak, "flops")["median"] == peak.results[0]["flops"]
        assert eng.call({"op": "stream", "batches": 3})["seconds_per_batch"] > 0
        ev = eng.call({"op": "eval", "images": 32, "batch": 16})
        assert ev["images"] == 32 and 0.0 <= ev["accuracy"] <= 1.0
    finally:
        gemm.close()
        eng.close()

    res = {"cifar": None, "train_runs": [{"model": "alexnet_cifar", "framework": "torch", "data_share": 0.01,
                                          "images_per_second": 100.0, "eval_images_per_second": 500.0,
                                          "peak_rss_bytes": 2 ** 30, "train_images": 64, "test_images": 32,
                                          "config": {"batch_size": 16}}]}
    tables = build_tables(res)
    assert tables["goals"][1][-1] == "met"
    assert "peak RSS" in render(tables, markdown=True)


def test_peak_in_the_steps_precision_with_each_frameworks_kernels():
    from alexbench.frameworks import cpu_has_bf16
    from benchmarks.mfu import CONV_SHAPE, GemmTarget, TfGemmTarget, conv_flops_count, default_precision

    assert default_precision() == ("bf16" if cpu_has_bf16() else "fp32")
    assert conv_flops_count(*CONV_SHAPE) == 2 * 32 * 32 * 32 * 256 * 256 * 9
    spec = {"sizes": [64, 96], "reps": 2, "threads": 1, "precision": "fp32", "conv_shape": [2, 8, 16, 8]}
    for target in (GemmTarget(spec), TfGemmTarget(spec)):
        r = target.op_gemm()
        assert r["precision"] == "fp32" and set(r["matmul_by_size"]) == {"64", "96"}
        assert r["conv3x3"] > 0 and r["conv_shape"] == [2, 8, 16, 8]
        assert r["flops"] == max([*r["matmul_by_size"].values(), r["conv3x3"]])
    assert "tensorflow" in TfGemmTarget(spec).op_gemm()["kernels"]


def test_tables_name_the_precision_and_the_peak_of_each_framework():
    from benchmarks.run import CPU_FLAGS, build_tables, flags_text, machine_info

    info = machine_info()
    assert set(info["cpu_flags"]) == set(CPU_FLAGS) and info["precision_auto"] in ("bf16", "fp32")
    assert flags_text({"avx2": True, "amx_bf16": False}) == "avx2 yes, amx_bf16 no"

    def fw(peak: float, kernels: str) -> dict:
        return {"mfu": {"median": 0.25}, "precision": "fp32", "train": {"median": 100.0}, "training_flops": 1e11,
                "eval": {"median": 500.0}, "data_share": 0.0,
                "peak": {"median": peak, "precision": "fp32", "kernels": kernels, "matmul": peak, "conv3x3": peak / 2}}

    cifar = {"forward_flops_per_image": 344e6, "torch": fw(400e9, "torch (oneDNN/MKL)"),
             "keras": fw(300e9, "tensorflow (oneDNN)"), "stream_share_if_inline": {"torch": 0.01, "keras": 0.01},
             "gemm_last_with_fp32": {"fp32_size": 2048, "fp32_flops": 350e9}, "fast_paths": {}}
    tables = build_tables({"cifar": cifar})
    mfu_rows = [r for r in tables["goals"] if "MFU" in r[0]]
    assert "fp32 step" in mfu_rows[0][0] and "400 GFLOP/s fp32 peak, torch" in mfu_rows[0][1]
    assert "300 GFLOP/s fp32 peak, tensorflow" in mfu_rows[1][1]
    peak_row = next(r for r in tables["speed"] if r[0].startswith("fp32 peak used for MFU"))
    assert peak_row[1:] == ["400", "300"]


def test_recipes_budget_run_readback_and_table(tmp_path):
    from conftest import synthetic_dataset

    from alexbench.finish import train_flops
    from benchmarks.recipes import CANDIDATES, candidate, config_for, markdown, planned_flops, run_candidate
    from benchmarks.run import machine_info

    # every shipped candidate but the reference fits the 0.5 PFLOP budget on the 45,000-image split
    for c in CANDIDATES:
        pflop = planned_flops(config_for(c, "torch", []), 45000) / 1e15
        assert c.reference or pflop <= 0.5, (c.name, pflop)
    assert planned_flops(config_for(candidate("base-e10"), "torch", []), 45000) == train_flops(344_346_624, 44800, 10)

    ds = synthetic_dataset(12, 4)
    tiny = ["model_options.width=0.125", "epochs=1", "batch_size=16", "eval_batch_size=64", "precision=fp32",
            "threads=1", "val_fraction=0.2"]
    c = candidate("e10-d0-ls02")
    refused = run_candidate(c, "torch", ds, tmp_path, max_pflop=1e-12, extra=tiny)
    assert refused["status"].startswith("refused") and not (tmp_path / c.name).exists()
    row = run_candidate(c, "torch", ds, tmp_path, max_pflop=0.5, extra=tiny)
    assert row["status"] == "finished" and row["pflop"] == pytest.approx(row["planned_pflop"])
    assert 0.0 <= row["test_accuracy"] <= 1.0 and row["epochs"] == 1
    again = run_candidate(c, "torch", ds, tmp_path, max_pflop=0.5, extra=tiny)  # read back, not retrained
    assert again["test_accuracy"] == row["test_accuracy"] and again["train_seconds"] == row["train_seconds"]
    with pytest.raises(SystemExit, match="another config"):
        run_candidate(c, "torch", ds, tmp_path, max_pflop=0.5, extra=[*tiny, "label_smoothing=0.05"])
    md = markdown([row, refused], machine_info(), 0.5)
    assert "| e10-d0-ls02 |" in md and "refused" in md and "avx2" in md
