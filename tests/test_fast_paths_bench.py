"""benchmarks.fast_paths: the configurations each part measures, the ratios it pairs, its tables."""

from __future__ import annotations

from benchmarks.fast_paths import _ratios, _variants, markdown, step_markdown
from benchmarks.harness import Config


def test_224_part_pairs_each_engine_with_the_seed_loop_and_its_loop_step():
    variants = _variants("224", bf16=True)
    labels = [label for label, _ in variants]
    assert labels[-1] == "seed-notebook loop (fp32)" and variants[-1][1] == {"plain_torch": True}
    cfgs = {label: Config(label, None, {}, results=[{"ips": 2.0 if "fused" in label else 1.0}]) for label in labels}
    ratios = _ratios("224", cfgs)
    assert ratios["engine bf16, fused step / seed loop"]["median"] == 2.0
    assert ratios["engine fp32, fused step / loop step"]["median"] == 2.0
    assert ratios["engine fp32, loop step / seed loop"]["median"] == 1.0
    assert {c["optimizer"]["fused"] for _, c in variants[:-1]} == {True, False}
    assert not any("bf16" in label for label, _ in _variants("224", bf16=False))  # no bf16 rows without it


def test_tables_show_median_range_and_rounds():
    res = {"ips": {"a": {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": [1.0, 2.0, 3.0]}},
           "ratios": {"a / b": {"median": 1.5, "min": 1.0, "max": 2.0, "rounds": [1.0, 1.5, 2.0]}}}
    text = markdown(res)
    assert "| a | 2.0 | 1.0–3.0 | 1.0, 2.0, 3.0 |" in text and "| a / b | 1.50× | 1.00–2.00× |" in text
    ms = {"m, SGD, fused": {"median": 10.0, "min": 9.0, "max": 11.0, "params": 2e6},
          "m, SGD, loop": {"median": 30.0, "min": 29.0, "max": 31.0, "params": 2e6}}
    assert "| m, SGD, fused | 2.0 M | 10 | 9–11 | 3.0× |" in step_markdown({"ms": ms})


def test_fp32_part_pairs_each_option_with_its_engines_fp32_default():
    variants = _variants("fp32", bf16=True)
    assert all(c["precision"] == "fp32" for _, c in variants)  # the part a CPU without bf16 runs
    labels = [label for label, _ in variants]
    speed = {"torch cifar fp32, batch 512": 3.0, "keras cifar fp32, XLA": 0.5, "torch 224 fp32": 4.0}
    cfgs = {label: Config(label, None, {}, results=[{"ips": speed.get(label, 1.0)}]) for label in labels}
    ratios = _ratios("fp32", cfgs)
    assert ratios["torch cifar fp32, batch 512 / torch cifar fp32"]["median"] == 3.0
    assert ratios["keras cifar fp32, XLA / keras cifar fp32"]["median"] == 0.5
    assert ratios["torch 224 fp32, channels_last off / torch 224 fp32"]["median"] == 0.25
    assert len(ratios) == len(labels) - 3  # every option once; the three defaults are the references
