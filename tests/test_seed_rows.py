"""benchmarks.seed_rows: the scaled plans keep each entry's protocol and only shrink the work."""

from __future__ import annotations

from alexbench.runner import load_plan
from benchmarks.seed_rows import PRESETS, SCALES, _markdown, write_plans


def test_scaled_plans_keep_the_protocol(tmp_path):
    plans = write_plans(tmp_path, PRESETS)
    for name, (path, protocols) in plans.items():
        _, shipped = load_plan(name)
        _, scaled = load_plan(str(path))
        assert [e.slug for e in scaled] == [e.slug for e in shipped]
        for s, o in zip(scaled, shipped):
            for key in ("model", "framework", "pretrained", "model_options", "input_size", "optimizer", "schedule",
                        "batch_size", "augment", "label_smoothing", "normalization", "precision", "tta_flip"):
                assert getattr(s.cfg, key) == getattr(o.cfg, key), (name, s.slug, key)
            n_train, max_epochs, n_test, n_val = SCALES[(o.cfg.framework, o.cfg.input_size >= 200)]
            assert s.cfg.epochs == min(o.cfg.epochs, max_epochs)
            assert (s.cfg.max_train_images, s.cfg.max_test_images) == (n_train, n_test)
            assert (s.cfg.val_fraction > 0) == (o.cfg.val_fraction > 0)
            protocol = protocols[(o.cfg.model, o.cfg.framework, bool(o.cfg.pretrained))]
            assert protocol["epochs"] == o.cfg.epochs
            assert protocol["train"] == round(50_000 * (1 - o.cfg.val_fraction))


def test_table_rows_for_finished_and_skipped_entries():
    machine = {"cpu": "cpu", "cores": 2, "flags": "avx2", "load_start": 1.0, "load_end": 2.0, "date": "d"}
    rows = [{"preset": "seeds", "entry": "a-torch-scratch-s0", "status": "finished", "protocol_epochs": 10,
             "protocol_train_images": 50_000, "input_size": 224, "epochs": 1, "train_images": 1000,
             "test_images": 500, "accuracy": 0.25, "accuracy_ci95": [0.2, 0.3], "images_per_second": 5.0,
             "full_scale_train_hours": 10 * 50_000 / 5.0 / 3600},
            {"preset": "seeds", "entry": "b-torch-pretrained-s0", "status": "skipped", "reason": "no weights",
             "protocol_epochs": 2, "protocol_train_images": 50_000}]
    md = _markdown(rows, machine)
    assert "| 1 (10) | 1,000 (50,000) | 500 | 25.0% (20.0%-30.0%) | 5.0 | 27.8 h |" in md
    assert "skipped: no weights" in md
