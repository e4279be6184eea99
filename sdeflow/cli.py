"""The ``sdeflow`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .commands import bench as _bench
from .commands import demo as _demo
from .commands import sample as _sample
from .commands import simulate as _simulate
from .commands import train as _train
from .commands import verify as _verify
from .commands._common import CommandError, Parser, check_device, set_threads

COMMANDS = [_demo, _simulate, _train, _sample, _bench, _verify]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sdeflow", description="SDEs and ODEs on PyTorch: simulate, verify, sample.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sdeflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and atomic writes clean up."""


def _on_term(signum: int, frame: object) -> None:
    raise Terminated()


def _command_name(args: argparse.Namespace) -> str:
    return " ".join(["sdeflow"] + [str(v) for v in (getattr(args, "command", None), getattr(args, "kind", None)) if v])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad options end in one line naming the option and exit status 2 (no traceback);
    Ctrl-C prints one line and exits 130 (SIGTERM: 143), leaving no temporary files. Torch's threads are
    set once here (``--threads``, else :func:`sdeflow.commands._common.default_threads`).
    ``SDEFLOW_TRACEBACK=1`` shows the traceback of an error instead of its one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    name = _command_name(args)
    try:
        if isinstance(getattr(args, "device", None), str):
            check_device(args.device)
        args.threads, _ = set_threads(getattr(args, "threads", None))
    except CommandError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_term) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt as err:
        term = isinstance(err, Terminated)
        print(f"{name}: {'terminated' if term else 'interrupted'}; nothing half-written was left", file=sys.stderr)
        return 143 if term else 130
    except (ValueError, TypeError) as err:  # CommandError, CheckpointError, sdeflow's argument errors
        if os.environ.get("SDEFLOW_TRACEBACK"):
            raise
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
