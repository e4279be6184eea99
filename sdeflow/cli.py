"""The ``sdeflow`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import bench as _bench
from .commands import demo as _demo
from .commands import sample as _sample
from .commands import simulate as _simulate
from .commands import train as _train
from .commands import verify as _verify

COMMANDS = [_demo, _simulate, _train, _sample, _bench, _verify]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdeflow", description="SDEs and ODEs on PyTorch: simulate, verify, sample.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sdeflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
