"""TensorBoard event files and resources.csv: written by every run, read back with their own readers."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import pytest
from conftest import synthetic_dataset, tiny_config

from alexbench.resources import COLUMNS, ResourceSampler, read_resources, summarize


def _scalars(run: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def _history(run: Path) -> list[dict[str, float]]:
    lines = (run / "history.csv").read_text().splitlines()
    head = lines[0].split(",")
    return [dict(zip(head, map(float, ln.split(",")))) for ln in lines[1:]]


def test_both_engines_write_the_same_tensorboard_tags(finished_runs):
    tags = {}
    for fw, run in finished_runs.items():
        assert len(list(run.glob("events.out.tfevents.*"))) == 1
        scalars = _scalars(run)
        tags[fw] = set(scalars)
        hist = _history(run)
        for col, tag in (("train_loss", "train/loss"), ("train_acc", "train/acc"), ("val_loss", "val/loss"),
                         ("val_acc", "val/acc"), ("lr", "lr"), ("images_per_second", "images_per_second")):
            assert [e.step for e in scalars[tag]] == [1, 2], (fw, tag)
            assert [e.value for e in scalars[tag]] == pytest.approx([r[col] for r in hist], rel=1e-4), (fw, tag)
        metrics = json.loads((run / "metrics.json").read_text())
        assert scalars["test/accuracy"][0].value == pytest.approx(metrics["test"]["accuracy"])
        assert scalars["test/accuracy"][0].step == 2
        for name, acc in metrics["test"]["per_class_accuracy"].items():
            assert scalars[f"test/per_class_accuracy/{name}"][0].value == pytest.approx(acc)
    assert tags["torch"] == tags["keras"]
    want = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "images_per_second", "test/accuracy"}
    assert want <= tags["torch"]


def test_every_run_records_its_resources(finished_runs):
    for fw, run in finished_runs.items():
        rows = read_resources(run / "resources.csv")
        assert rows and all(r["rss_bytes"] > 0 for r in rows), fw
        assert all(r["gpu_memory_bytes"] is None for r in rows)  # CPU run: GPU columns stay empty
        m = json.loads((run / "metrics.json").read_text())
        assert m["resources"]["samples"] == len(rows)
        assert m["resources"]["peak_rss_bytes"] == max(r["rss_bytes"] for r in rows)
        assert m["mean_cpu_percent"] == pytest.approx(sum(r["cpu_percent"] for r in rows) / len(rows))
        assert m["peak_gpu_memory_bytes"] is None and m["peak_rss_bytes"] > 0  # the existing key stays


def test_switches_turn_tensorboard_and_the_sampler_off(tmp_path):
    from alexbench.train import train

    m = train(tiny_config("torch", epochs=1, tensorboard=False, resource_interval_seconds=0), tmp_path / "r",
              data=synthetic_dataset())
    assert not list((tmp_path / "r").glob("events.out.tfevents.*"))
    assert not (tmp_path / "r" / "resources.csv").exists() and "resources" not in m


def test_sampler_rows_malformed_lines_and_resume(tmp_path):
    with ResourceSampler(tmp_path, interval=0.05) as s:
        deadline = time.time() + 60  # a loaded machine samples late: wait for rows, not for a fixed time
        while len(read_resources(s.path)) < 4 and time.time() < deadline:
            sum(i * i for i in range(20000))  # keep the process busy
    rows = read_resources(s.path)
    assert len(rows) >= 4 and s.path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [r["elapsed_seconds"] for r in rows] == sorted(r["elapsed_seconds"] for r in rows)
    assert max(r["cpu_percent"] for r in rows) > 0  # the busy loop shows
    with open(s.path, "a") as fh:
        fh.write("1796000000.0,12.5,3\n")  # a malformed line (not written by the sampler) is skipped
    assert len(read_resources(s.path)) == len(rows)
    with ResourceSampler(tmp_path, interval=10):  # a resumed run appends and keeps the first sample's clock
        pass
    again = read_resources(s.path)
    assert len(again) == len(rows) + 1 and again[-1]["elapsed_seconds"] >= rows[-1]["elapsed_seconds"]
    summary = summarize(again, 0.05)
    assert summary["samples"] == len(again) and summary["peak_rss_bytes"] == max(r["rss_bytes"] for r in again)


def test_gpu_columns_come_from_nvml(tmp_path, monkeypatch):
    """No GPU here: NVML is a stand-in module; the sampler's GPU path runs as on a GPU machine."""
    calls = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: calls.append(i) or f"gpu{i}",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=87),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=3 * 2**30))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with ResourceSampler(tmp_path, interval=10, device="cuda:1"):
        pass
    row = read_resources(tmp_path / "resources.csv")[-1]
    assert calls == [3] and row["gpu_util_percent"] == 87 and row["gpu_memory_bytes"] == 3 * 2**30
    assert summarize([row])["peak_gpu_memory_bytes"] == 3 * 2**30


def test_report_plots_resources_next_to_the_learning_curves(finished_runs, tmp_path):
    from alexbench.report import write_report

    html = tmp_path / "report.html"
    write_report([finished_runs["torch"], finished_runs["keras"]], html)
    text, md = html.read_text(), html.with_suffix(".md").read_text()
    assert "CPU, memory and GPU use per wall-clock time" in text and "resources.csv" in text
    curves = text[text.index('id="curves"'):]
    assert curves.index("per wall-clock time") < curves.index("CPU, memory and GPU use")  # in the curves section
    assert "CPU, memory and GPU use per wall-clock time" in md


def test_resource_figure_adds_gpu_panels_when_sampled():
    from alexbench.report import plots

    rows = [{"elapsed_seconds": t, "cpu_percent": 150.0, "system_cpu_percent": 90.0, "rss_bytes": 2e9,
             "gpu_util_percent": 80.0, "gpu_memory_bytes": 5e9} for t in (0.0, 2.0, 4.0)]
    cpu_only = [{**r, "gpu_util_percent": None, "gpu_memory_bytes": None} for r in rows]
    with_gpu = plots.resource_curves([("a", "#0072B2", rows, 2)])
    without = plots.resource_curves([("a", "#0072B2", cpu_only, 2)])
    assert with_gpu.startswith(b"\x89PNG") and without.startswith(b"\x89PNG") and with_gpu != without


def test_gpu_index_reads_both_frameworks_device_names():
    from alexbench.resources import _gpu_index

    assert [_gpu_index(d) for d in ("cuda", "cuda:1", "gpu", "gpu:2", "/GPU:0", "cpu", "mps")] == [0, 1, 0, 2, 0, None,
                                                                                                   None]
