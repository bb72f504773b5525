"""Files checked and folders written whole or not at all.

`sha256_of` is the digest every recorded file carries (the CoreNLP jars SPICE checks, the EAT checkpoint a
conversion records); `write_atomically` writes one file complete or not at all. Folders are built beside their place under a temporary name, then swapped in.

A folder being written lives at `.<name>.partial-<pid>-<random>` beside its target, so a process killed at any
point leaves either no folder at the target or the complete one that was there before. The swap is one
`renameat2(RENAME_EXCHANGE)` where the kernel and file system offer it (Linux 3.15+: the target is never absent),
else two renames (the old folder moves aside to `.<name>.old-<pid>-<random>` first, so a kill between them leaves
no folder at the target, and the complete old one beside it). What a killed writer left beside the target is
removed by the next writer of the same target once its process is gone.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of the file at `path`, read in blocks (a checkpoint may be larger than memory allows)."""
    with Path(path).open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_atomically(path: Path, data: str | bytes) -> None:
    """`path` complete or absent: written under a temporary name, flushed, then renamed."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, then the folders themselves, to the disk (a power cut keeps what a rename
    then publishes)."""
    for root, _, files in os.walk(folder):
        for name in files:
            descriptor = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_folder(Path(root))


def fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (`renameat2` with `RENAME_EXCHANGE`); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(second))


def _leftover_pattern(target: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(target.name)}\.(?:partial|old)-(\d+)-[0-9a-f]+")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(target: Path) -> list[Path]:
    """Remove what killed writers of `target` left beside it (their process gone); returns what was removed."""
    pattern, removed = _leftover_pattern(target), []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not _alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def partial_folder(target: Path) -> Path:
    """A new empty folder beside `target` (same file system, so it can be renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    folder = target.parent / f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir()
    return folder


def replace_folder(new: Path, target: Path) -> None:
    """Put the complete folder `new` at `target`, replacing what is there whole (an empty folder, or a folder the
    caller has decided to replace); the old one is deleted only once `new` is in place."""
    fsync_tree(new)
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new)  # `new` now names the old folder
    else:
        aside = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(target, aside)
        os.rename(new, target)
        shutil.rmtree(aside)
    fsync_folder(target.parent)


__all__ = ["fsync_folder", "fsync_tree", "partial_folder", "remove_leftovers", "replace_folder"]
