"""Where output goes: checked before the work that produces it, and named when writing it fails.

A run that decodes a long video, builds a 2B model or trains for hours should not find out at the end that its
output path is a folder, sits under a file, or is on a read-only file system: `check_writable` says so before the
work starts. A full disk can only be found out while writing; `write_failure` turns what the writer raised (an
OSError without the file's name, or safetensors' error that wraps one) into an OSError naming the output.

The errors are OSErrors with `errno`, `strerror` and `filename` set, so `except PermissionError` and friends work
and the command line prints them as `PATH: REASON` (auroralong_hf/cli.py).
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path


def check_writable(path, *, what: str, folder: bool) -> Path:
    """`path` made absolute, after checking that it can be written; nothing is created.

    Args:
        path: a file (`folder=False`) to be created or replaced, or a folder (`folder=True`) to be created or
            written into; missing parent folders are allowed (they are created when writing).
        what: how the user gave it (e.g. "--save-state"), for the messages.

    Raises (each naming `path`):
        IsADirectoryError: a file is wanted and `path` is a folder.
        FileExistsError: a folder is wanted and `path` is a file.
        NotADirectoryError: a file stands where a parent folder would be.
        OSError: no file can be created where `path` goes: PermissionError, or errno EROFS (read-only file system).
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir() and not folder:
        raise IsADirectoryError(errno.EISDIR, f"{what} is a folder; give a file name", str(path))
    if path.exists() and not path.is_dir() and folder:
        raise FileExistsError(errno.EEXIST, f"{what} exists and is not a folder", str(path))
    # the folder the first missing part of the path would be created in (or the existing output folder itself)
    where = path if path.is_dir() else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{what} cannot be written: {where} is a file, not a folder",
                                 str(path))
    try:
        # an unnamed file where the kernel allows it (O_TMPFILE): nothing to clean up, even after a crash
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as error:
        raise OSError(error.errno, f"{what} cannot be written in {where}: {error.strerror}", str(path)) from None
    return path


def write_failure(error: BaseException, path, what: str) -> OSError | None:
    """An OSError naming `path` for an `error` raised while writing it, or None when `error` is not an I/O error.

    `error`: an OSError (a full disk's ENOSPC from a write call carries no file name), or safetensors'
    SafetensorError, whose message carries the I/O error as "(os error N)" and names its own temporary file.
    """
    number = os_error_number(error)
    if number is None:
        return None
    return OSError(number, f"{what} could not be written: {os.strerror(number)}", str(path))


def os_error_number(error: BaseException) -> int | None:
    """The OS error number of a failed write: an OSError's errno, or the "(os error N)" that safetensors'
    SafetensorError carries in its message (it wraps the I/O error of a full disk that way); else None."""
    if isinstance(error, OSError):
        return error.errno
    found = re.search(r"\(os error (\d+)\)", str(error))
    return int(found.group(1)) if found else None


__all__ = ["check_writable", "os_error_number", "write_failure"]
