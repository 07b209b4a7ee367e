"""Messages that point the right way, and --debug that keeps the exit code (one test each)."""

from __future__ import annotations

import pytest

from alexbench.cli import main


@pytest.mark.parametrize("argv", [["--debug", "data", "/nonexistent"], ["data", "/nonexistent", "--debug"]])
def test_debug_before_or_after_the_command_adds_the_traceback_and_keeps_exit_2(argv, capsys):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback (most recent call last)" in err and "UserError" in err
    assert err.rstrip().splitlines()[-1] == "alexbench data: error: /nonexistent: no such file or directory"


def test_without_debug_the_same_error_is_one_line(capsys):
    assert main(["data", "/nonexistent"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["alexbench data: error: /nonexistent: no such file or "
                                                            "directory"]


def test_debug_keeps_exit_1_for_an_internal_error(monkeypatch, capsys):
    import alexbench.models.commands as mc

    monkeypatch.setattr(mc, "models_command", lambda args: 1 / 0)
    assert main(["models", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err


# run's skipped-entry message (--weights-dir DIR, not --weights PATH): tests/test_runner.py
def test_train_names_its_own_weights_option(tmp_path, monkeypatch):
    import torch

    from alexbench.models import WeightsUnavailable
    from alexbench.models.pretrained import torchvision_state_dict

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled in tests")))
    with pytest.raises(WeightsUnavailable, match=r"or pass --weights PATH to an offline copy$"):
        torchvision_state_dict("alexnet")


def test_preset_file_not_found_vs_unknown_preset_name(capsys, tmp_path):
    assert main(["run", "--preset", "missing.yaml", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "alexbench run: error: --preset: missing.yaml: not found"
    assert main(["run", "--preset", "nope", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown preset 'nope'" in err and "quick" in err and "standard" in err
    assert not (tmp_path / "o").exists()


def test_bad_device_names_the_field_and_value_only(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("device: tpu\nepochs: 3\n")
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--config", str(cfg),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"alexbench train: error: {cfg}: device: 'tpu' is not a torch device"), err
    assert "epochs" not in err and "{" not in err  # the field and its value, not the whole config


def test_run_help_lists_the_presets_and_the_default(capsys):
    from importlib import resources

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    shipped = sorted(p.name[:-5] for p in (resources.files("alexbench") / "presets").iterdir()
                     if p.name.endswith(".yaml"))
    assert {"quick", "standard", "seeds"} <= set(shipped)
    assert f"{', '.join(shipped)}; default: quick" in out


def test_data_without_a_source_warns_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.chdir(tmp_path)
    assert main(["data"]) == 0
    cap = capsys.readouterr()
    assert (cap.out + cap.err).count("no CIFAR-10 copy found") == 1, cap
    assert "SMALL EMBEDDED SAMPLE" in cap.out


def test_compare_says_when_runs_used_the_embedded_sample(tmp_path, capsys):
    from support.fakeruns import make_fake_run

    full = make_fake_run(tmp_path / "full", framework="torch")
    sample = make_fake_run(tmp_path / "sample", framework="keras", embedded_sample=True, sha256="cd" * 32)
    assert main(["compare", str(full), str(sample)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "embedded CIFAR-10 sample" in line]
    assert len(notes) == 1 and "alexnet_cifar/keras" in notes[0] and "torch" not in notes[0], out
    assert main(["compare", str(full)]) == 0
    assert "embedded" not in capsys.readouterr().out
