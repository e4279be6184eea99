"""Subcommands of the ``sdeflow`` command; each module has ``add_parser(subparsers)`` and ``run(args)``."""
