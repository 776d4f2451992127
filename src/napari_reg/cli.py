"""``napari-reg`` command line: argument parsing only; the work lives in the commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each name is a module in napari_reg.commands with add_parser() and run().
COMMANDS = ("demo", "register", "apply", "segment", "template", "batch", "motion")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-reg",
        description="Registration of 3D medical images in world (RAS mm) space. "
        "Transforms map fixed-image world points to moving-image world points.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"napari-reg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"napari_reg.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"napari_reg.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
