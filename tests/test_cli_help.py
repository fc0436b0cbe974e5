"""Every command's --help renders (argparse %-formats help strings; a stray % used to crash it)."""
from __future__ import annotations

import pytest

from lcbench.cli import _command_modules, main

COMMANDS = [m.COMMAND for m in _command_modules()]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    assert "95% CI" in out  # the compare command's help, with its literal percent sign


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: lcbench {command}" in capsys.readouterr().out


def test_an_uncaught_exception_exits_3_not_1(monkeypatch, capsys):
    """A bug exited 1, the code of failed jobs and regressions: CI could not tell a crash from a verdict."""
    import lcbench.cli.codecs as codecs_cmd

    def broken(args):
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(codecs_cmd, "run", broken)
    assert main(["codecs"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "lcbench codecs: internal error (AttributeError: " in err


def test_train_on_a_device_that_is_not_there_is_bad_input(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for model in ("importance_map", "comcnn", "autoencoder"):
        assert main(["train", model, "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err
        assert "--device cuda: no CUDA GPU is available here" in err and "Traceback" not in err


def test_codecs_pattern_matching_nothing_is_bad_input(capsys):
    """`lcbench codecs nosuch` printed only the pipelines footer and exited 0."""
    assert main(["codecs", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "no codec matches 'nosuch'; codecs: " in err and "jpeg" in err


def test_a_warm_run_does_not_import_what_it_does_not_use():
    """summary importing bdrate at module level pulled scipy.interpolate into every run (~0.8 s of
    a 1 s fully cached Kodak run)."""
    import subprocess
    import sys

    code = ("import sys, lcbench.summary, lcbench.runner, lcbench.cli.run; "
            "print(sorted(m for m in ('scipy.interpolate', 'scipy.stats', 'torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
