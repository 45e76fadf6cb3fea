"""Files written whole or not at all: a temporary file beside the target, then ``os.replace``.

A reader (or a resumed run) never sees half a file, and a kill or a full disk never replaces a good file
with a cut one. Temporary files are named ``.<target name>.<host>-<process id>.tmp``; those of processes of
this host that no longer run are removed by the first write of a process into the same folder (once: a
predict writes thousands of files into one folder).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[^.]*)-(?P<pid>\d+)\.tmp$")
HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
_cleaned: set[Path] = set()  # folders this process has already cleaned


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the temporary files in ``folder`` left by processes of this host that no longer run (another
    host's, on a shared filesystem, cannot be judged from here and are left)."""
    removed = []
    for path in folder.glob(".*.tmp"):
        match = TEMPORARY.match(path.name)
        if (
            match
            and match["host"] == HOST
            and int(match["pid"]) != os.getpid()
            and not process_alive(int(match["pid"]))
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def atomic_write(
    path: Path | str, data: bytes | str | Callable[[BinaryIO], None], durable: bool = False
) -> None:
    """Write ``data`` (bytes, text, or a function writing into a binary file) to ``path`` atomically.

    ``durable``: also flush the file and the rename to the disk before returning (checkpoints: a power cut
    right after must not leave an empty file). A failed write (a full disk) raises OSError naming ``path``
    and leaves no temporary file; the previous ``path`` is untouched.
    """
    path = Path(path)
    if path.parent not in _cleaned:
        remove_orphans(path.parent)
        _cleaned.add(path.parent)
    tmp = path.with_name(f".{path.name}.{HOST}-{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode() if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(error, OSError) and error.errno is not None:  # name the target, not the temporary
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    if durable:
        _fsync_folder(path.parent)
