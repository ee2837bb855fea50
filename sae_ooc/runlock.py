"""One writer per run directory: an advisory lock (fcntl.flock) on RUN/.lock for as long as a command runs.

Two commands writing one run at once (`browse --force` twice, `harvest` while `train` runs) crashed inside a stage
or read the other's half-written files. A command that may write takes the lock exclusively; `sae-ooc query`, which
reads stage outputs and only adds to its own atomic cache, takes it shared, so queries run side by side but not
beside a writer. A second command does not wait: it stops at once with one line naming the command that holds
the run (RUN/.lock records it). The lock is the kernel's, so a holder that dies (kill -9) releases it; the file stays.

A run the process cannot write (a read-only file system) takes no lock: no one can write it, and a command that has
something to write there says so in one line (sae_ooc.cli.guarded).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from sae_ooc.errors import UserError

LOCK_FILE = ".lock"
_held: dict[Path, list] = {}  # resolved run root -> [fd, depth]: nested takes in one process (pipeline.run inside the CLI) reuse it
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def holder(root: Path) -> str:
    """What RUN/.lock says holds the run ('sae-ooc train --run R (pid 123)'), or a placeholder."""
    try:
        return (Path(root) / LOCK_FILE).read_text().strip() or "another command"
    except OSError:
        return "another command"


def describe_command() -> str:
    return " ".join(["sae-ooc" if Path(sys.argv[0]).name == "sae-ooc" else Path(sys.argv[0]).name, *sys.argv[1:]])[:300]


@contextmanager
def run_lock(root: str | Path, command: str | None = None, shared: bool = False):
    """Hold RUN/.lock (exclusive, or `shared` for readers) while the block runs; UserError naming the holder if taken."""
    root = Path(root)
    key = root.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    created = None if root.exists() else root  # the topmost folder this lock creates, removed again if left empty
    while created is not None and created.parent != created and not created.parent.exists():
        created = created.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if e.errno not in _UNWRITABLE:
            raise
        yield  # nothing can be written here by this user: no lock to take (a write says so in one line)
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"run directory {root} is in use by `{holder(root)}`; wait until it finishes (one command at a time "
                            f"writes a run), or use another --run") from None
        os.ftruncate(fd, 0)  # a writer refused by a query is told which query
        os.pwrite(fd, f"{command or describe_command()} (pid {os.getpid()})\n".encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
            if created is not None and [p.name for p in root.iterdir()] == [LOCK_FILE]:  # a command that wrote nothing leaves no folder
                (root / LOCK_FILE).unlink()
                for d in (root, *root.parents):
                    try:
                        d.rmdir()
                    except OSError:  # a folder above now holds something else (pipeline --seeds writes RUN's siblings)
                        break
                    if d == created:
                        break
    finally:
        os.close(fd)  # closing releases the flock
