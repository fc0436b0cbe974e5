"""``lcbench`` command line: one small module per subcommand, heavy imports inside ``run``.

Every module in this package that defines ``COMMAND``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int`` becomes a subcommand. Only this layer turns exceptions into
exit codes: 0 ok, 1 failed jobs or checks, 2 bad input.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERNAL_ERROR = 3  # an uncaught exception: a bug, told apart from failed jobs (1) and bad input (2)


def _command_modules() -> list:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "COMMAND"):
            modules.append(mod)
    return modules


def build_parser() -> argparse.ArgumentParser:
    from lcbench import __version__

    parser = argparse.ArgumentParser(prog="lcbench", description="Benchmark classical and learned image codecs.")
    parser.add_argument("--version", action="version", version=f"lcbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        # argparse %-formats help strings (not descriptions): a literal % must be doubled there
        p = sub.add_parser(mod.COMMAND, help=mod.HELP.replace("%", "%%"), description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    previous = _terminate_like_interrupt()
    try:
        return int(args._run(args) or 0)
    except _Terminated:
        print("terminated; finished jobs are saved, run the same command again to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted; finished jobs are saved, run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except (ValueError, KeyError, FileNotFoundError, ImportError, RuntimeError, OSError) as exc:
        print(f"lcbench {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - a bug, not a verdict: CI must not read it as "jobs failed"
        import traceback

        traceback.print_exc()
        print(f"lcbench {args.command}: internal error ({type(exc).__name__}: {exc}); this is a bug in lcbench or a "
              f"plugin, please report it with the traceback above. Finished jobs are saved.", file=sys.stderr)
        return EXIT_INTERNAL_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same clean-up runs: results.csv is written from the
    records and the worker processes are stopped instead of being left computing as orphans."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _terminate_like_interrupt():
    """Install the SIGTERM handler (main thread only); returns the previous handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
