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
