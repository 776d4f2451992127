"""``napari-reg`` command line: argument parsing only; the work lives in the commands."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import warnings

# Each name is a module in napari_reg.commands with add_parser() and run().
COMMANDS = ("demo", "register", "apply", "convert", "segment", "template", "batch", "motion")


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every command cleans up the same way."""


EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_TERM_SEEN = threading.Event()


def _on_sigterm(_signum, _frame) -> None:
    _TERM_SEEN.set()
    # Worker processes (batch, template) are not in the signal's path: pass it on, so
    # they stop their pair and clean up too (runners.terminate_like_interrupt).
    import multiprocessing

    for child in multiprocessing.active_children():
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGTERM)
    raise Terminated()


def _one_line_warnings(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each, without the source line numpy/scipy would print."""
    text = " ".join(str(message).split())
    print(f"napari-reg: warning: {text}", file=file or sys.stderr)


class _quiet_nibabel:
    """nibabel logs header repairs ("sizeof_hdr should be 348; set ...") to stderr; our
    own checks report what matters in one line, so its chatter is held back meanwhile."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("nibabel")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL + 1)

    def __exit__(self, *exc) -> None:
        self.logger.setLevel(self.level)


def _outputs_note() -> str:
    from .io.output_set import interrupted_outputs_note

    return interrupted_outputs_note()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr and a non-zero exit code:
    1 errors, 2 usage, 130 Ctrl-C, 143 SIGTERM (both clean up their partial outputs)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = f"napari-reg {args.command}"
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    terminated = False
    try:
        with warnings.catch_warnings(), _quiet_nibabel():
            warnings.showwarning = _one_line_warnings
            code = int(args.func(args) or 0)
    except Terminated:
        terminated = True
        code = EXIT_INTERRUPTED
        print(f"\n{name}: terminated; {_outputs_note()}", file=sys.stderr)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        print(f"\n{name}: interrupted; {_outputs_note()}", file=sys.stderr)
    except (ValueError, OSError, MemoryError, RuntimeError, RecursionError) as exc:
        code = 1
        print(f"{name}: error: {_one_line(exc)}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, traceback on request
        if os.environ.get("NAPARI_REG_DEBUG"):
            raise
        code = 1
        print(f"{name}: internal error ({type(exc).__name__}): {_one_line(exc)} "
              "(set NAPARI_REG_DEBUG=1 to see the traceback)", file=sys.stderr)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    # A command that caught the interrupt itself returned 130; SIGTERM reports as 143.
    if code == EXIT_INTERRUPTED and (terminated or _TERM_SEEN.is_set()):
        code = EXIT_TERMINATED
    _TERM_SEEN.clear()
    return code


if __name__ == "__main__":
    sys.exit(main())
