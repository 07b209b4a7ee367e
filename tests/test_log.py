"""The one logger and the CLI's --quiet / --verbose switch."""

from __future__ import annotations

import logging

import pytest
from test_data_sources import isolated, run_cli, served_archive, write_image_folder  # noqa: F401 - fixtures

from alexbench.log import LOGGER_NAME, QUIET, VERBOSE, configure, get_logger


def test_module_loggers_are_children_of_one_logger():
    assert get_logger().name == LOGGER_NAME
    assert get_logger("alexbench.data.cache").parent is get_logger()
    assert get_logger("data.cache").name == "alexbench.data.cache"


def test_levels_and_prefixes(capsys):
    log = get_logger("alexbench.test")
    configure()
    log.debug("d1")
    log.info("i1 %s", "x")
    log.warning("w1 100%")
    configure(VERBOSE)
    log.debug("d2")
    configure(QUIET)
    log.info("i3")
    log.warning("w3")
    log.error("e3")
    assert capsys.readouterr().err.splitlines() == ["i1 x", "warning: w1 100%", "debug: d2", "warning: w3", "e3"]


def test_verbosity_must_be_known():
    with pytest.raises(ValueError, match="verbosity"):
        configure(5)


@pytest.mark.parametrize("where", ["before", "after"])
def test_cli_verbose_shows_debug_lines(served_archive, isolated, capsys, where):  # noqa: F811
    argv = ["--verbose", "data", "--download"] if where == "before" else ["data", "--download", "-v"]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 0, err
    # not a terminal: the download lines are debug lines, shown only with --verbose
    assert "debug: downloading file://" in err and "MD5 verified" in err
    assert logging.getLogger(LOGGER_NAME).level == logging.DEBUG


def test_cli_quiet_keeps_warnings_and_errors(tmp_path, capsys, isolated):  # noqa: F811
    write_image_folder(tmp_path / "f", classes=("a", "b"), n_train=3, n_test=2)
    (tmp_path / "f" / "train" / "a" / "notes.txt").write_text("not an image")
    rc, out, err = run_cli(capsys, "data", str(tmp_path / "f"), "--quiet")
    assert rc == 0 and "warning:" in err and "skipped 1 non-image file" in err
    rc, _, err = run_cli(capsys, "-q", "data", str(tmp_path / "missing"))
    assert rc == 2 and err.strip().startswith("alexbench data: error:") and "missing" in err


def test_quiet_and_verbose_exclude_each_other(capsys):
    from alexbench.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--quiet", "--verbose", "models"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err

