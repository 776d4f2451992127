"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or a cancelled run therefore never leaves a half-written output, and a reader
never sees one. ``os.replace`` is atomic on POSIX within one file system.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from napari_reg.io.output_set import staging_prefix

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    ``suffix`` defaults to the target's full suffix (``.nii.gz`` kept whole) so writers
    that choose a format by extension keep working. On error the temporary is removed
    and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ""
    # The owner's pid in the name lets the next run remove it if this process is killed.
    fd, tmp = tempfile.mkstemp(prefix=f"{staging_prefix()}{target.stem}.", suffix=suffix,
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
