"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or a cancelled run therefore never leaves a half-written output, and a reader
never sees one. ``os.replace`` is atomic on POSIX within one file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["STAGING_PREFIX", "atomic_path", "host_tag", "staging_prefix"]

# Every temporary name starts with this, then the owner's pid and host, so a later run
# can tell a dead process's leftovers from a live one's (see io/output_set.clean_stale).
STAGING_PREFIX = ".napari-reg-"


def host_tag() -> str:
    """8 hex digits naming this machine (temporary names on shared file systems)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def staging_prefix() -> str:
    """Name prefix of this process's staging folders and temporary files."""
    return f"{STAGING_PREFIX}{os.getpid()}-{host_tag()}-"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: the only portable read is set-and-restore
    os.umask(mask)
    return mask


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
    try:
        # mkstemp creates 0600; an output gets the mode a plain open() would give it.
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
