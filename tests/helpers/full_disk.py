"""A small filesystem that can be filled on purpose: a tmpfs mounted for one test (needs root)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(size_kib: int = 4096) -> Iterator[Path]:
    """A fresh tmpfs of ``size_kib`` KiB, unmounted afterwards.

    Skipped with the reason when this process may not mount (not root, or no tmpfs): a full
    disk cannot be simulated faithfully otherwise (RLIMIT_FSIZE would also stop pytest itself)."""
    folder = Path(tempfile.mkdtemp(prefix="pfo-full-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        with contextlib.suppress(OSError):
            folder.rmdir()


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem is full; delete it to free the space again."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):  # large writes first, then the last few bytes
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler
