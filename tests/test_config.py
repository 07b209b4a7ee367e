"""One typed config: unknown keys and out-of-range values rejected with the field named."""

from __future__ import annotations

import pytest

from alexbench.cli import main
from alexbench.config import ScheduleConfig, apply_overrides, load_yaml, resolve_config
from alexbench.errors import UserError
from alexbench.schedule import lr_at


@pytest.mark.parametrize("override,field", [
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("batch_size=0", "batch_size"),
    ("epochs=-3", "epochs"),
    ("bogus_key=1", "bogus_key"),
    ("optimizer.momentum=1.5", "optimizer.momentum"),
    ("precision=fp8", "precision"),
    ("schedule.name=linear", "schedule.name"),
])
def test_bad_values_exit_2_naming_the_field(override, field, tmp_path, capsys):
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--set", override,
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert field in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_yaml_python_tags_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    rc = main(["train", "--model", "alexnet_cifar", "--framework", "torch", "--config", str(cfg),
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "evil.yaml" in err and "Traceback" not in err
    assert not marker.exists()


def test_config_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\noptimizer:\n  lr: 0.2\n")
    cfg = resolve_config(str(f), ["optimizer.lr=0.3"])
    assert cfg.epochs == 7 and cfg.optimizer.lr == 0.3 and cfg.optimizer.momentum == 0.9


def test_config_file_errors_name_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optimizer:\n  lr: 0\n")
    with pytest.raises(UserError, match=r"c\.yaml: optimizer\.lr"):
        resolve_config(str(f))
    f.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_yaml(f)
    with pytest.raises(UserError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_overrides_parse_yaml_scalars():
    d = apply_overrides({}, ["a.b=3", "c=true", "d=[1, 2]", "e=hello"])
    assert d == {"a": {"b": 3}, "c": True, "d": [1, 2], "e": "hello"}
    with pytest.raises(UserError):
        apply_overrides({}, ["novalue"])


def test_schedules():
    oc = ScheduleConfig(name="onecycle", pct_start=0.25, div_factor=10, final_div_factor=100)
    lrs = [lr_at(s, 10, 4, 1.0, oc) for s in range(40)]
    assert lrs[0] == pytest.approx(0.1)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.01)
    assert lrs.index(max(lrs)) == 10
    cos = ScheduleConfig(name="cosine", warmup_epochs=1, final_div_factor=1e9)
    c = [lr_at(s, 10, 4, 1.0, cos) for s in range(40)]
    assert c[0] == pytest.approx(0.1) and c[9] == pytest.approx(1.0) and c[-1] < 0.01
    step = ScheduleConfig(name="step", step_epochs=2, gamma=0.5)
    assert [lr_at(s, 10, 6, 1.0, step) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    assert lr_at(5, 10, 2, 0.3, ScheduleConfig(name="constant")) == 0.3


def test_divide_by_epoch_compounds_like_keras_learning_rate_scheduler():
    """``LearningRateScheduler(lambda epoch, lr: lr / (epoch + 1))`` fed back its own rate: lr / (e + 1)!."""
    lr, keras_lrs = 0.002, []
    for epoch in range(5):  # what Keras does: the callback gets the rate it set the epoch before
        lr = lr / (epoch + 1)
        keras_lrs.append(lr)
    sched = ScheduleConfig(name="divide_by_epoch")
    ours = [lr_at(e * 7 + 3, 7, 5, 0.002, sched) for e in range(5)]  # mid-epoch: constant within an epoch
    assert ours == pytest.approx(keras_lrs) and ours[3] == pytest.approx(0.002 / 24)
    cyc = ScheduleConfig(name="divide_by_epoch", cycle_epochs=2)  # "3 trainings of 10 epochs": restarts
    assert [lr_at(e * 7, 7, 6, 1.0, cyc) for e in range(6)] == pytest.approx([1, 0.5, 1, 0.5, 1, 0.5])
