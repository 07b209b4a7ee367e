"""Small input, small cost: YAML bounds (size, depth, alias expansion) and bounded counts."""

from __future__ import annotations

import time

import pytest

from alexbench.bounded_yaml import MAX_BYTES, MAX_DEPTH, YamlLimit, load_bounded
from alexbench.cli import main
from alexbench.config import load_yaml, resolve_config
from alexbench.errors import UserError
from alexbench.runner import MAX_SEEDS, load_plan, parse_seeds


def laughs(levels: int = 9, key: str = "model_options") -> str:
    """Each list names the previous one ten times: 10**levels values once expanded."""
    lines = ["l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    body = "\n".join("  " + line for line in lines)
    return f"{key}:\n{body}\n"


@pytest.mark.parametrize("doc, needle", [
    (laughs(), "expands to more than"),
    ("epochs: 2\nmodel_options: " + "[" * 5000 + "]" * 5000 + "\n", f"nested deeper than {MAX_DEPTH}"),
    ("a: &a [1, *a]\n", "recursive alias"),
    ("seed: " + "9" * 5000 + "\n", "digits"),
])
def test_bounded_yaml_refuses(doc, needle):
    t0 = time.perf_counter()
    with pytest.raises(YamlLimit, match=needle):
        load_bounded(doc)
    assert time.perf_counter() - t0 < 30  # an unbounded expansion would take hours; generous for a loaded CI machine


def test_aliases_within_bounds_still_work():
    doc = "base: &b {lr: 0.05, momentum: 0.9}\noptimizer: *b\nlist: [*b, *b]\n"
    data = load_bounded(doc)
    assert data["optimizer"] == {"lr": 0.05, "momentum": 0.9} and len(data["list"]) == 2
    def nested(k: int) -> str:  # the mapping, k lists and the scalar: k + 2 levels
        return "a: " + "[" * k + "1" + "]" * k + "\n"

    assert load_bounded(nested(MAX_DEPTH - 2))["a"]  # exactly at the depth bound
    with pytest.raises(YamlLimit):
        load_bounded(nested(MAX_DEPTH - 1))


def test_depth_counts_through_aliases():
    inner = "[" * 20 + "1" + "]" * 20
    doc = f"a: &a {inner}\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n"
    with pytest.raises(YamlLimit, match="through aliases"):
        load_bounded(doc)


def test_config_size_cap_and_dev_zero(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_BYTES + "\nepochs: 2\n")
    with pytest.raises(UserError, match=r"big.yaml: refused: larger than 64 KiB"):
        load_yaml(big)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"/dev/zero: refused: larger than"):
        load_yaml("/dev/zero")
    assert time.perf_counter() - t0 < 30  # an unbounded expansion would take hours; generous for a loaded CI machine
    with pytest.raises(UserError, match=r"is a folder"):
        load_yaml(tmp_path)


def test_set_value_is_bounded_too():
    flow = "{" + ", ".join(line.strip() for line in laughs().splitlines()[1:]) + "}"
    with pytest.raises(UserError, match=r"--set model_options=.*refused: expands"):
        resolve_config(None, ["model_options=" + flow])


@pytest.mark.parametrize("argv_tail, needle", [
    (["--set", "optimizer.lr=inf"], "optimizer.lr: Input should be a finite number"),
    (["--set", "optimizer.betas=[.nan, 0.99]"], "optimizer.betas.0: Input should be a finite number"),
    (["--set", "optimizer.betas=[0.9, 1.0]"], "optimizer.betas.1: Input should be less than 1"),
    (["--set", "schedule.warmup_epochs=.inf"], "schedule.warmup_epochs: Input should be a finite number"),
    (["--set", "seed=18446744073709551616"], "seed: Input should be less than or equal to 4294967295"),
])
def test_non_finite_and_out_of_range_values_are_refused_up_front(tmp_path, capsys, argv_tail, needle):
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", *argv_tail, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # refused before the run folder is made


def test_seed_counts_are_bounded():
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("5,2") == [5, 2]
    t0 = time.perf_counter()
    for text, needle in [("1000000000000", "at most"), (",".join(map(str, range(10**5))), "at most"),
                         ("4294967296,1", "too large"), ("1,1", "repeated"), ("-1,2", "negative")]:
        with pytest.raises(UserError, match=needle):
            parse_seeds(text)
    assert time.perf_counter() - t0 < 30  # no quadratic planning: generous for a loaded CI machine
    assert MAX_SEEDS >= 10


def test_plan_size_is_bounded(tmp_path):
    preset = tmp_path / "many.yaml"
    preset.write_text("name: many\nentries:\n" + "".join(
        f"  - {{model: alexnet_cifar, framework: torch, batch_size: {i + 1}}}\n" for i in range(200)))
    with pytest.raises(UserError, match=r"200 entries × 10 seeds is too many"):
        load_plan(str(preset), seeds=list(range(10)))
