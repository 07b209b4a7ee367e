"""README.md stays true: its example block runs, its command synopses name real options, and its
config table names every config key.

The example block is run as written, in a scratch folder, with two substitutions: the data
source it names becomes a tiny image folder, and ``train`` gets a few ``--set`` overrides
that make it take seconds (one epoch, 1/8 width, fp32, one thread).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import write_image_folder

from alexbench.cli import build_parser, main

README = Path(__file__).resolve().parent.parent / "README.md"
README_DATA = "cifar-10-python.tar.gz"  # the source the examples name
TINY_TRAIN = ["--set", "epochs=1", "--set", "model_options.width=0.125", "--set", "batch_size=8",
              "--set", "precision=fp32", "--set", "threads=1", "--set", "deterministic=true"]


def _text() -> str:
    return README.read_text(encoding="utf-8")


def example_commands() -> list[list[str]]:
    """The ``alexbench …`` lines of the README's example block (the sh block that runs ``compare``)."""
    blocks = re.findall(r"```sh\n(.*?)```", _text(), flags=re.S)
    block = next(b for b in blocks if "alexbench compare" in b)
    commands = []
    for line in block.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line.startswith("alexbench "):
            commands.append(shlex.split(line)[1:])
    return commands


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # --help
        rc = exc.code
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXBENCH_DATA", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    src = write_image_folder(tmp_path / "tiny", classes=("cat", "dog"), per_class=8)
    commands = example_commands()
    seen = [c[0] for c in commands]
    for wanted in ("--help", "models", "data", "train", "eval", "compare", "report"):
        assert wanted in seen, f"README examples lost `alexbench {wanted}`"
    # `models` builds every registered model in both frameworks (VGG16 too: minutes on 2 busy cores);
    # here it lists the one model the examples train. tests/test_quiet_cli.py runs it whole.
    import alexbench.models as registry

    monkeypatch.setattr(registry, "MODELS", {"alexnet_cifar": registry.MODELS["alexnet_cifar"]})
    for argv in commands:
        argv = [str(src) if a == README_DATA else a for a in argv]
        if argv[0] == "train":
            argv += TINY_TRAIN
        rc, out = _run(argv, capsys)
        assert rc == 0, (argv, out[-3000:])
        _check(argv, out, tmp_path)


def _check(argv: list[str], out: str, root: Path) -> None:
    """What the README says each example does."""
    cmd = argv[0]
    if argv == ["--help"]:
        for name in ("data", "models", "parity", "train", "eval", "run", "compare", "report"):
            assert name in out
    elif argv == ["run", "--help"]:
        flat = " ".join(out.split())
        assert all(name in flat for name in ("quick", "standard", "seeds")) and "default: quick" in flat, out
    elif cmd == "models":
        assert "alexnet_cifar" in out
    elif cmd == "data":
        assert "total" in out and "cat" in out and "dog" in out
    elif cmd == "train":
        run = root / argv[argv.index("--out") + 1]
        # the run folder as the README lists it; a one-epoch run has no last.prev
        for name in ("config.yaml", "requested.yaml", "history.csv", "metrics.json", "predictions.npz", "log.txt",
                     "state.json"):
            assert (run / name).is_file(), name
        assert list((run / "checkpoints").glob("last.*")) and list((run / "checkpoints").glob("best.*"))
        assert not list((run / "checkpoints").glob("last.prev.*"))
        assert "auto" not in (run / "config.yaml").read_text().split("\ntta_flip")[0].replace("augment", "")
    elif cmd == "eval":
        res = json.loads((root / argv[argv.index("--out") + 1]).read_text(),
                         parse_constant=lambda w: pytest.fail(f"bare {w} in eval --out"))
        assert res["test"]["n"] > 0 and res["preprocess"]["input_size"] == 32
    elif cmd == "compare":
        assert "Comparison" in out and "McNemar" in out
    elif cmd == "report":
        html = root / argv[argv.index("-o") + 1]
        md, files = html.with_suffix(".md"), html.with_name(f"{html.stem}_files")
        assert html.is_file() and md.is_file() and files.is_dir()
        assert f"{files.name}/" in md.read_text()  # the Markdown's figures live in FILE_files/


def _subcommands() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def test_readme_command_table_names_real_commands_and_options():
    """Every ``| `alexbench CMD …` |`` row names a command that exists, with options it takes."""
    commands = _subcommands()
    rows = re.findall(r"^\| `alexbench ([a-z]+)([^|]*(?:\\\|[^|]*)*)` \|", _text(), flags=re.M)
    assert {name for name, _ in rows} == set(commands), "README command table and the CLI differ"
    for name, synopsis in rows:
        options = set(commands[name]._option_string_actions)
        for opt in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", synopsis):
            assert opt in options, f"README: `alexbench {name}` lists {opt}, which it does not take"


def test_readme_config_table_names_every_config_key():
    from pydantic import BaseModel

    from alexbench.config import TrainConfig

    def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel) and name != "model_options":
                out |= keys(ann, f"{prefix}{name}.")
            else:
                out.add(prefix + name)
        return out

    text = _text()
    table = text[text.index("| key | default | meaning |"):]
    table = table[:table.index("\n\n")]
    documented = set()
    for line in table.splitlines()[2:]:
        documented |= set(re.findall(r"`([a-z_.0-9]+)`", line.split("|")[1]))
    assert documented == keys(TrainConfig)
