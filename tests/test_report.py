"""compare and report on synthetic run folders with the engine's exact layout."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from support.fakeruns import make_fake_run

from alexbench.cli import main
from alexbench.errors import UserError
from alexbench.report import compare, load_run, write_report
from alexbench.report.commands import compare_command, format_tables, print_comparison, report_command
from alexbench.rundir import read_history
from alexbench.stats import mcnemar_exact, paired_difference

SKIPPED = {"entry": "alexnet/keras/imagenet/s0", "model": "alexnet", "framework": "keras",
           "pretrained": "imagenet", "reason": "ImageNet weights not available offline; pass --weights-dir"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {
        "torch": make_fake_run(base / "torch", framework="torch", accuracy=0.72,
                               entry="alexnet_cifar/torch/scratch/s0"),
        "keras": make_fake_run(base / "keras", framework="keras", accuracy=0.66),
        "pre": make_fake_run(base / "pre", model="alexnet", pretrained="imagenet", accuracy=0.85, epochs=3),
        "running": make_fake_run(base / "running", model="vgg16", framework="keras", pretrained="imagenet",
                                 epochs=5, epochs_done=2),
    }


# --- load_run -----------------------------------------------------------------------

def test_load_run_reads_everything(runs: dict[str, Path]) -> None:
    r = load_run(runs["keras"])
    assert r.finished and r.status == "finished"
    assert r.label == "alexnet_cifar/keras/scratch/s0"  # derived: metrics.json has no "entry"
    assert r.predictions is not None and r.predictions["y_true"].size == 1000
    assert len(r.history) == 5 and r.history[-1]["elapsed_seconds"] > r.history[0]["elapsed_seconds"]
    assert r.config["batch_size"] == 128 and "optimizer:" in r.config_text
    assert load_run(runs["torch"]).label == "alexnet_cifar/torch/scratch/s0"


def test_load_run_errors_name_the_file(tmp_path: Path, runs: dict[str, Path]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty/metrics\.json: not found \(is this a run folder\?\)"):
        load_run(tmp_path / "empty")
    with pytest.raises(UserError, match="no such run folder"):
        load_run(tmp_path / "nope")
    with pytest.raises(UserError, match="still in progress"):
        load_run(runs["running"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"model": "x", ')
    with pytest.raises(UserError, match=r"bad/metrics\.json: not valid JSON"):
        load_run(bad)
    (bad / "metrics.json").write_text('{"model": "x", "framework": "torch"}')
    with pytest.raises(UserError, match=r"metrics\.json: missing key 'test'"):
        load_run(bad)
    (bad / "metrics.json").write_text(json.dumps({"model": "x", "framework": "torch", "test": {"accuracy": 0.5}}))
    (bad / "predictions.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"predictions\.npz: cannot read"):
        load_run(bad)


def test_running_run_loads_when_allowed(runs: dict[str, Path]) -> None:
    r = load_run(runs["running"], allow_incomplete=True)
    assert not r.finished and r.progress == "running, epoch 2/5" and len(r.curve) == 2


def test_history_ignores_half_written_last_line(tmp_path: Path) -> None:
    p = tmp_path / "history.csv"
    p.write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,elapsed_seconds,images_per_second\n"
                 "1,2.0,0.3,1.9,0.35,0.1,10,10,4500\n2,1.5,0.5,1.6,0.4")
    rows = read_history(p)
    assert [r["epoch"] for r in rows] == [1.0]
    p.write_text("epoch,loss\n1,2.0\n")
    with pytest.raises(UserError, match="missing column"):
        read_history(p)


# --- compare ------------------------------------------------------------------------

def test_compare_rows_and_pairs(runs: dict[str, Path]) -> None:
    res = compare([runs["torch"], runs["keras"], runs["pre"], runs["running"]])
    json.dumps(res)  # JSON-ready
    rows = {r["entry"]: r for r in res["rows"]}
    assert set(rows) == {"alexnet_cifar/torch/scratch/s0", "alexnet_cifar/keras/scratch/s0",
                         "alexnet/torch/imagenet/s0", "vgg16/keras/imagenet/s0"}
    t = rows["alexnet_cifar/torch/scratch/s0"]
    lo, hi = t["accuracy_ci95"]
    assert lo <= t["test_accuracy"] <= hi and t["params_total"] == 2_473_610 and t["best_epoch"] >= 1
    assert t["train_flops"] == 3 * t["flops_per_image"] * 45000 * t["epochs"]
    assert rows["vgg16/keras/imagenet/s0"]["test_accuracy"] is None
    assert rows["vgg16/keras/imagenet/s0"]["progress"] == "running, epoch 2/5"
    assert len(res["pairs"]) == 3  # the three finished runs share one test set

    a, b = load_run(runs["torch"]), load_run(runs["keras"])
    ca, cb = a.correct(), b.correct()
    pair = next(p for p in res["pairs"] if {p["a"], p["b"]} == {a.label, b.label})
    if pair["a"] != a.label:
        ca, cb = cb, ca
    m, d = mcnemar_exact(ca, cb), paired_difference(ca, cb)
    assert pair["p_value"] == pytest.approx(m.p_value) and pair["verdict"] == m.verdict
    assert pair["diff"] == pytest.approx(d.diff) and pair["diff_ci95"] == pytest.approx([d.lo, d.hi])
    assert pair["only_a_right"] == m.b and pair["only_b_right"] == m.c


def test_compare_refuses_pairs_on_different_test_sets(tmp_path: Path, runs: dict[str, Path]) -> None:
    other = make_fake_run(tmp_path / "other", framework="keras", sha256="cd" * 32)
    shuffled = make_fake_run(tmp_path / "shuffled", framework="keras", seed=1,
                             y_true=np.roll(np.arange(1000) % 10, 1))
    res = compare([runs["torch"], other, shuffled])
    reasons = {(n["a"], n["b"]): n["reason"] for n in res["not_compared"]}
    assert any("sha256" in r for r in reasons.values())
    assert any("different test labels" in r for r in reasons.values())
    assert res["pairs"] == []


def test_compare_groups_seeds_with_mean_and_sample_std(tmp_path: Path) -> None:
    dirs = [make_fake_run(tmp_path / f"s{s}", seed=s, accuracy=0.6 + 0.05 * s, epochs=2) for s in range(3)]
    res = compare(dirs)
    (g,) = res["groups"]
    accs = [r["test_accuracy"] for r in res["rows"]]
    assert g["n"] == 3 and g["seeds"] == [0, 1, 2]
    assert g["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert g["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))


def test_compare_accepts_a_folder_of_runs(runs: dict[str, Path]) -> None:
    res = compare([runs["torch"].parent])
    assert len(res["rows"]) == 4


def test_compare_command_plain_text_has_no_ansi(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_command(argparse.Namespace(runs=[str(runs["torch"]), str(runs["keras"])])) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert "alexnet_cifar/keras/scratch/s0" in out and "McNemar" in out
    header = next(line for line in out.splitlines() if line.startswith("run "))
    assert "test acc" in header and "macro-F1" in header and "img/s" in header and "train PFLOP" in header


def test_rich_table_when_a_terminal(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from alexbench.report import commands

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "220")
    assert commands.use_rich(Tty())
    monkeypatch.setenv("CI", "true")
    assert not commands.use_rich(Tty())
    buf = Tty()
    commands._print_rich(compare([runs["torch"], runs["keras"]]), buf)
    assert "alexnet_cifar/keras/scratch/s0" in buf.getvalue()
    assert "significant" in format_tables(compare([runs["torch"], runs["keras"]]))


def test_print_comparison_for_the_runner(runs: dict[str, Path]) -> None:
    import io

    buf = io.StringIO()
    result = print_comparison([runs["torch"], runs["pre"]], buf)
    assert len(result["rows"]) == 2 and "alexnet/torch/imagenet/s0" in buf.getvalue()


def test_cli_compare_exit_codes(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(runs["torch"]), str(runs["pre"])]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics.json: not found" in err


# --- report -------------------------------------------------------------------------

def _imgs(html: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', html)


def test_write_report_html_and_markdown(tmp_path: Path, runs: dict[str, Path]) -> None:
    html_path, md_path = write_report([runs["torch"], runs["keras"], runs["pre"], runs["running"]],
                                      tmp_path / "out" / "report.html", title="Quick comparison", skipped=[SKIPPED])
    assert (html_path, md_path) == (tmp_path / "out" / "report.html", tmp_path / "out" / "report.md")
    html, md = html_path.read_text(), md_path.read_text()

    # self-contained: every image is an embedded PNG, nothing is fetched
    srcs = _imgs(html)
    assert len(srcs) >= 11 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html
    # contents
    assert "Quick comparison" in html and "Best test accuracy" in html
    for section in ("comparison", "curves", "per-class", "confusion", "misclassified", "samples", "significance",
                    "data", "system", "configs"):
        assert f'id="{section}"' in html, section
    assert "running, epoch 2/5" in html and "running, epoch 2/5" in md
    assert "train PFLOP" in html and "train PFLOP" in md
    table = md.split("## Comparison", 1)[1].split("\n\n")[1].splitlines()  # header, rule, one row per run
    assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1, table  # same cell count in every row
    assert SKIPPED["reason"] in html and SKIPPED["reason"] in md
    assert "PyTorch" in html and "McNemar" in html and "<details>" in html and "batch_size: 128" in html
    assert "airplane→" in html or "misclassified" in html
    # markdown twin: same sections, figures as files next to it
    for heading in ("## Comparison", "## Learning curves", "## Per-class accuracy", "## Confusion matrices",
                    "## Misclassified test images", "## Training samples", "## Is the difference real?",
                    "## System and versions", "## Configs"):
        assert heading in md, heading
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == len(srcs)
    assert all((md_path.parent / link).is_file() for link in links)
    assert all(link.startswith("report_files/") for link in links)
    # atomic writes leave no temporary files behind
    assert not [p for p in (tmp_path / "out").rglob(".*tmp")]


def test_report_rewrite_of_five_runs_is_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the runner rewrites the report at every epoch end, from cached figures; a rewrite of unchanged runs
    # must give the same bytes (speed is measured in benchmarks, not asserted here). The clock is held
    # still: the "generated" stamp has minute resolution and would differ across a minute boundary.
    import datetime as real_dt

    from alexbench.report import render

    class _Frozen(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_dt.datetime(2026, 1, 2, 3, 4, 59, tzinfo=tz)

    monkeypatch.setattr(render._dt, "datetime", _Frozen)
    dirs = [make_fake_run(tmp_path / f"r{i}", framework=("torch", "keras")[i % 2], seed=i // 2, accuracy=0.6 + 0.03 * i)
            for i in range(5)]
    write_report(dirs, tmp_path / "r.html")
    first = (tmp_path / "r.html").read_bytes()
    write_report(dirs, tmp_path / "r.html")
    assert (tmp_path / "r.html").read_bytes() == first


def test_report_banners_for_sample_and_jpeg(tmp_path: Path) -> None:
    sample = make_fake_run(tmp_path / "s", embedded_sample=True, dataset_name="CIFAR-10 sample (embedded)",
                           n_test=200, epochs=2)
    html, md = write_report([sample], tmp_path / "a.html")
    assert "made from the small embedded sample, not full cifar-10" in html.read_text().lower()
    assert "made from the small embedded sample, not full cifar-10" in md.read_text().lower()
    jpeg = make_fake_run(tmp_path / "j", dataset_name="CIFAR-10 (JPEG copy)", epochs=2)
    html, _ = write_report([jpeg], tmp_path / "b.html")
    assert "Accuracies are on the CIFAR-10 JPEG copy" in html.read_text()


def test_report_with_only_runs_in_progress(tmp_path: Path) -> None:
    r = make_fake_run(tmp_path / "r", epochs=10, epochs_done=1)
    html, md = write_report([r], tmp_path / "p.html", skipped=[SKIPPED])
    text = html.read_text()
    assert "running, epoch 1/10" in text and "No run has finished yet" in text
    assert len(_imgs(text)) == 2  # learning curves only
    empty = make_fake_run(tmp_path / "e", epochs=10, epochs_done=0)
    html, _ = write_report([empty], tmp_path / "q.html")
    assert "No epoch has finished yet" in html.read_text()


def test_report_lists_failed_runs_and_missing_predictions(tmp_path: Path) -> None:
    failed = make_fake_run(tmp_path / "f", epochs=5, epochs_done=2, status="failed",
                           reason="loss became NaN at epoch 3")
    nopred = make_fake_run(tmp_path / "n", framework="keras", with_predictions=False, epochs=2)
    html, _ = write_report([failed, nopred], tmp_path / "r.html")
    text = html.read_text()
    assert "loss became NaN at epoch 3" in text and "predictions.npz missing" in text


def test_report_removes_figures_of_runs_no_longer_shown(tmp_path: Path, runs: dict[str, Path]) -> None:
    write_report([runs["torch"], runs["keras"]], tmp_path / "r.html")
    before = {p.name for p in (tmp_path / "r_files").iterdir()}
    write_report([runs["torch"]], tmp_path / "r.html")
    after = {p.name for p in (tmp_path / "r_files").iterdir()}
    assert after < before and not any("keras" in n for n in after)


def test_report_rejects_bad_output_name(tmp_path: Path, runs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match=r"\.html"):
        write_report([runs["torch"]], tmp_path / "report.pdf")


def test_report_command_prints_both_paths(tmp_path: Path, runs: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.html"
    assert report_command(argparse.Namespace(runs=[str(runs["torch"])], output=str(out))) == 0
    assert capsys.readouterr().out.split() == [str(out), str(tmp_path / "x.md")]
    assert main(["report", str(tmp_path / "missing"), "-o", str(out)]) == 2
