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
