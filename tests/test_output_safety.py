"""Output paths never destroy what alexbench did not write.

Each test creates the user's files first, runs the command, and checks them byte for byte
afterwards. A refusal is one line naming the file and the way out, exit code 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest
from support.fakeruns import make_fake_run

from alexbench.cli import main
from alexbench.outputs import MANIFEST, claim_run_folder, is_run_folder


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "r", with_predictions=False, epochs=2)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"alexbench {command}: error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- report -o


def test_report_does_not_replace_an_unrelated_markdown_twin(tmp_path, fake_run, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README.md").write_bytes(b"# My project\n\nhand-written notes\n")
    before = snapshot(docs)
    assert main(["report", str(fake_run), "-o", str(docs / "README.html")]) == 2
    line = one_error(capsys, "report")
    assert f"{docs / 'README.md'}: exists and was not written by alexbench" in line and "--force" in line
    assert snapshot(docs) == before  # nothing added either: no README.html, no README_files/


def test_report_keeps_the_users_pngs_in_the_figures_folder(tmp_path, fake_run, capsys):
    files = tmp_path / "notes_files"
    files.mkdir()
    (files / "holiday.png").write_bytes(b"\x89PNG user picture")
    (files / "diagram.PNG").write_bytes(b"\x89PNG another")
    before = snapshot(files)
    assert main(["report", str(fake_run), "-o", str(tmp_path / "notes.html")]) == 0
    capsys.readouterr()
    after = snapshot(files)
    assert {k: after[k] for k in before} == before
    ours = json.loads((files / MANIFEST).read_text())["files"]
    assert "holiday.png" not in ours and len(ours) >= 3
    # a rewrite with fewer figures removes only alexbench's stale figures
    html = (tmp_path / "notes.html").read_text()
    (files / "curves_per_epoch.png").unlink()  # the user deleted one: nothing to do about it
    assert main(["report", str(fake_run), "-o", str(tmp_path / "notes.html")]) == 0
    assert snapshot(files)["holiday.png"] == before["holiday.png"] and "<meta name=\"generator\"" in html


def test_report_refuses_a_users_png_where_a_figure_goes(tmp_path, fake_run, capsys):
    files = tmp_path / "notes_files"
    files.mkdir()
    (files / "curves_per_epoch.png").write_bytes(b"mine")
    before = snapshot(tmp_path)
    assert main(["report", str(fake_run), "-o", str(tmp_path / "notes.html")]) == 2
    line = one_error(capsys, "report")
    assert "notes_files/curves_per_epoch.png: exists and was not written by alexbench" in line
    assert snapshot(tmp_path) == before


def test_report_keeps_a_figure_the_user_edited(tmp_path, fake_run, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(fake_run), "-o", str(out)]) == 0
    edited = tmp_path / "r_files" / "accuracy_overview.png"
    edited.write_bytes(b"my annotated version")
    assert main(["report", str(fake_run), "-o", str(out)]) == 2  # would replace it: refused
    assert "r_files/accuracy_overview.png" in one_error(capsys, "report")
    assert edited.read_bytes() == b"my annotated version"
    assert main(["report", str(fake_run), "-o", str(out), "--force"]) == 0  # the way out
    assert edited.read_bytes().startswith(b"\x89PNG")


def test_report_replaces_only_its_own_html(tmp_path, fake_run, capsys):
    out = tmp_path / "page.html"
    out.write_bytes(b"<html>my page</html>")
    assert main(["report", str(fake_run), "-o", str(out)]) == 2
    assert "page.html: exists and was not written by alexbench" in one_error(capsys, "report")
    assert out.read_bytes() == b"<html>my page</html>"
    assert not (tmp_path / "page.md").exists() and not (tmp_path / "page_files").exists()
    assert main(["report", str(fake_run), "-o", str(out), "--force"]) == 0
    capsys.readouterr()
    assert main(["report", str(fake_run), "-o", str(out)]) == 0  # now it is alexbench's: rewritten
    assert (tmp_path / "page.md").read_text().startswith("<!-- generator: alexbench")


def test_report_output_path_problems_are_one_line(tmp_path, fake_run, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir.html").mkdir()
    cases = [(tmp_path / "afile" / "r.html", "afile is a file"), (tmp_path / "adir.html", "is a folder")]
    for path, needle in cases:
        assert main(["report", str(fake_run), "-o", str(path)]) == 2
        assert needle in one_error(capsys, "report")


# --------------------------------------------------------------------------- train / run / eval --out


TRAIN = ["train", "--model", "alexnet_cifar", "--framework", "torch", "--set", "epochs=1"]


def test_train_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.yaml").write_bytes(b"my: settings\n")
    (out / "history.csv").write_bytes(b"date,event\n2024-01-01,started\n")
    (out / "notes.txt").write_bytes(b"keep me")
    before = snapshot(out)
    assert main([*TRAIN, "--out", str(out)]) == 2
    line = one_error(capsys, "train")
    assert f"{out / 'config.yaml'}: exists and was not written by alexbench" in line and "--force" in line
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)


def test_train_refuses_a_users_checkpoints_folder(tmp_path, capsys):
    out = tmp_path / "project"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"someone else's model")
    before = snapshot(out)
    assert main([*TRAIN, "--out", str(out)]) == 2
    assert "checkpoints: exists and was not written by alexbench" in one_error(capsys, "train")
    assert snapshot(out) == before


def test_run_folder_ownership(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "log.txt").write_text("user log\n")
    with pytest.raises(Exception, match="log.txt: exists and was not written by alexbench"):
        claim_run_folder(d)
    claim_run_folder(d, force=True)  # --force: the way out
    (d / "config.yaml").write_text("# alexbench: the resolved config of this run\nepochs: 1\n")
    assert is_run_folder(d)  # a run that failed before its first state.json is still alexbench's
    claim_run_folder(d)
    e = tmp_path / "e"
    e.mkdir()
    (e / "state.json").write_text('{"status": "finished", "epoch": 2, "epochs": 2, "pid": 1}')
    (e / "config.yaml").write_text("epochs: 2\n")  # written before the header existed
    assert is_run_folder(e)


@pytest.mark.parametrize("command", ["train", "run"])
def test_out_path_problems_are_one_line(tmp_path, capsys, command):
    argv = TRAIN if command == "train" else ["run", "--preset", "quick"]
    (tmp_path / "afile").write_bytes(b"data")
    for out, needle in [(tmp_path / "afile", "exists and is not a folder"),
                        (tmp_path / "afile" / "sub", "afile is a file")]:
        assert main([*argv, "--out", str(out)]) == 2
        assert needle in one_error(capsys, command)
    assert (tmp_path / "afile").read_bytes() == b"data"


@contextlib.contextmanager
def _as_nobody():
    """Root writes anywhere: drop the effective user for the duration (restored after)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("command", ["train", "run", "report"])
def test_read_only_folder_is_one_line(command, capsys, fake_run):
    base = Path(tempfile.mkdtemp(prefix="alexbench-ro-"))  # outside pytest's 0700 tmp folders
    try:
        os.chmod(base, 0o755)
        ro = base / "ro"
        ro.mkdir(mode=0o555)
        os.chmod(ro, 0o555)
        argv = {"train": [*TRAIN, "--out", str(ro / "run")], "run": ["run", "--out", str(ro / "run")],
                "report": ["report", str(fake_run), "-o", str(ro / "r.html")]}[command]
        with _as_nobody():
            rc = main(argv)
        assert rc == 2
        assert f"{ro} is not writable" in one_error(capsys, command)
        assert list(ro.iterdir()) == []
    finally:
        os.chmod(base / "ro", 0o755)
        for p in sorted(base.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        base.rmdir()


def test_run_refuses_foreign_run_json_and_report(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "report.html").write_bytes(b"<p>my report</p>")
    before = snapshot(out)
    assert main(["run", "--preset", "quick", "--out", str(out), "--set", "epochs=1"]) == 2
    assert "report.html: exists and was not written by alexbench" in one_error(capsys, "run")
    (out / "run.json").write_bytes(b"[1, 2, 3]")
    before = snapshot(out)
    assert main(["run", "--preset", "quick", "--out", str(out), "--resume"]) == 2
    assert "run.json: exists and was not written by alexbench" in one_error(capsys, "run")
    assert snapshot(out) == before


def test_eval_out_does_not_replace_a_users_file(tmp_path, fake_run, capsys):
    target = tmp_path / "results.json"
    target.write_bytes(b'{"mine": true}')
    assert main(["eval", str(fake_run), "--out", str(target)]) == 2
    assert "results.json: exists and was not written by alexbench" in one_error(capsys, "eval")
    assert target.read_bytes() == b'{"mine": true}'
