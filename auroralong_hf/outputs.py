"""Output paths and atomic writes: a command's output is checked before the work that produces it, written under
a temporary name and renamed into place once complete, and named in the error when writing it fails.

One module, because these are one promise to the user: a run that decodes a long video, builds a 2B model or trains
for hours neither finds out at the end that its output cannot be written, nor leaves a half-written output behind.

- Before the work: `check_writable` (a file or folder can be created at a path: not a folder where a file is
  wanted, no file in the way, not a read-only file system) and `check_output_dir` (a model folder: refused when it
  is a file, or not empty without overwrite).
- Writing: `write_file_atomically(path, write)` and `write_folder_atomically(output_dir, write)` run `write` on a
  temporary sibling and rename it over the output; on any failure (an exception, KeyboardInterrupt, SIGTERM /
  SIGHUP) the temporary is deleted and an earlier output is left as it was.
- Failures: `write_failure` turns what a writer raised (an OSError without the file's name, as a full disk's ENOSPC
  from a write call, or safetensors' error that wraps one) into an OSError naming the output; `os_error_number`
  reads the error number out of either.

The errors are OSErrors with `errno`, `strerror` and `filename` set, so `except PermissionError` and friends work
and the command line prints them as `PATH: REASON` (auroralong_hf/cli.py).

Temporary folders are named `.{name}.tmp-{pid}-{token}` and hold a marker file (`OWNER_MARKER`: pid, host, output
name) while they are being written, so they are recognisably ours and their owner is known. A process killed
outright (SIGKILL, the OOM killer, power loss) cannot clean up, so every folder write first removes the temporaries
of its parent folder whose owner is a process of this host that no longer runs; a folder without our marker, or
whose owner is alive, is never touched. A temporary file (`.{name}.{pid}-{token}.tmp`) has no room for a marker:
one left by a killed process stays until it is removed by hand.

Rwkv6Cache.save (modeling/) writes its state file the same way with its own code: modeling/ ships as remote code
inside saved model folders and imports nothing from this package.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import uuid
from pathlib import Path

OWNER_MARKER = ".auroralong-partial.json"
_TMP_NAME = re.compile(r"^\..+\.tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
# A replaced output folder (overwrite) waits inside a temporary of its own until the new one is in place.
_REPLACED = "replaced"
# Signals that ask a process to stop (kill, a closed terminal) and would otherwise end it without any cleanup.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


# ---------------------------------------------------------------------------------- checking an output before the work


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


def check_output_dir(output_dir, overwrite: bool) -> Path:
    """The absolute output folder; FileExistsError if it is a file, or a non-empty folder without `overwrite`.

    Stale temporaries in its parent are removed first, so that an output folder a killed overwrite had moved aside
    is back in place (and protected) before it is looked at.
    """
    output_dir = Path(output_dir).expanduser().absolute()
    remove_stale_temporaries(output_dir.parent)
    if output_dir.exists():
        if not output_dir.is_dir():
            raise FileExistsError(f"{output_dir} exists and is not a folder.")
        if any(output_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{output_dir} is not empty; pass --overwrite (overwrite=True) to replace it.")
    return output_dir


# -------------------------------------------------------------------------------------------------- writing atomically


def write_file_atomically(path, write) -> Path:
    """Run `write(tmp)`, which creates the file `tmp` (a temporary sibling of `path`), then rename it over `path`.

    `tmp` is a Path in `path`'s folder (created with its parents when missing) where nothing exists yet; `write`
    creates the file there, e.g. `lambda tmp: fig.savefig(tmp, format="png")`. The rename is atomic: `path` holds
    either its earlier content or the complete new file, never a half-written one. On any failure (an exception,
    KeyboardInterrupt, SIGTERM / SIGHUP) the temporary file is deleted, `path` is left as it was and the exception
    propagates; an OSError that names the temporary file, or no file (a full disk's ENOSPC), is raised naming
    `path` instead, its errno and subclass (PermissionError, ...) kept. A SIGTERM / SIGHUP is delivered again once
    the cleanup is done. Returns `path` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    with _stop_signals_raise():
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException as err:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(err, OSError) and err.errno is not None and _names_no_file_but(err, tmp):
                raise OSError(err.errno, err.strerror, str(path)) from err
            raise
    return path


def write_folder_atomically(output_dir: Path, write) -> None:
    """Run `write(tmp_dir)` in a temporary sibling folder, then rename it to `output_dir`.

    On any failure (an exception, KeyboardInterrupt, SIGTERM / SIGHUP) the temporary folder is deleted and an
    existing `output_dir` is left as it was; a replaced `output_dir` (overwrite) is moved aside first and deleted
    only after the rename succeeded. Stale temporaries of dead processes in the same parent are removed first.
    A folder that cannot be written (read-only file system, disk full, no permission) raises OSError naming
    `output_dir` and the reason, its errno kept; a SIGTERM / SIGHUP is delivered again once the cleanup is done.
    """
    output_dir = Path(output_dir)
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(output_dir, err) from err
    remove_stale_temporaries(output_dir.parent)
    tmp_dir = aside = None
    with _stop_signals_raise():
        try:
            tmp_dir = _owned_temporary(output_dir)
            write(tmp_dir)
            (tmp_dir / OWNER_MARKER).unlink()
            if output_dir.exists():
                # Empty, or overwrite=True: the old folder waits in a temporary of ours until the new one is in place,
                # so a run killed in between leaves it where the next run puts it back (remove_stale_temporaries).
                aside = _owned_temporary(output_dir)
                output_dir.rename(aside / _REPLACED)
            tmp_dir.rename(output_dir)
        except BaseException as err:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
            if aside is not None and _put_back(aside, output_dir.name):
                shutil.rmtree(aside, ignore_errors=True)
            wrapped = _write_error(output_dir, err)
            if wrapped is None:
                raise
            raise wrapped from err
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def remove_stale_temporaries(parent) -> list[Path]:
    """Delete the temporaries in `parent` left by writers that were killed; returns the folders deleted.

    Only folders named like ours that hold our owner marker, written on this host by a process that has ended, are
    touched. A replaced output folder found in one is put back where it was if nothing has taken its place.
    """
    if os.name != "posix":  # liveness is read with kill(pid, 0), which on Windows would terminate the process
        return []
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return []
    host = socket.gethostname()
    for folder in entries:
        match = _TMP_NAME.match(folder.name)
        if match is None or folder.is_symlink() or not folder.is_dir():
            continue
        owner = _read_marker(folder)
        if (owner is None or owner.get("pid") != int(match["pid"]) or owner.get("host") != host
                or _process_alive(owner["pid"])):
            continue
        if (folder / _REPLACED).exists() and not _put_back(folder, owner.get("output")):
            continue  # the user's replaced folder could not be put back: leave it where it is
        _remove_owned(folder)
        removed.append(folder)
    return removed


# ---------------------------------------------------------------------------------------------------- naming a failure


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


# --------------------------------------------------------------------- the temporaries, their errors, the stop signals


def _remove_owned(folder: Path) -> None:
    """Delete our temporary `folder`, its owner marker last: a removal cut short is finished by the next run."""
    with contextlib.suppress(OSError):
        for child in folder.iterdir():
            if child.name == OWNER_MARKER:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _put_back(folder: Path, output) -> bool:
    """Move the replaced output folder held in our temporary `folder` back to its sibling `output` unless something
    has taken its place; True once nothing of the user's is left in `folder` (put back, or superseded)."""
    replaced = folder / _REPLACED
    if not replaced.exists():
        return True
    if not isinstance(output, str) or output in ("", ".", "..") or "/" in output:
        return False  # the marker must name a sibling
    target = folder.parent / output
    if target.exists():
        return True  # the new output is in place: the replaced folder is what the overwrite asked to delete
    try:
        replaced.rename(target)
    except OSError:
        return False
    return True


def _owned_temporary(output_dir: Path) -> Path:
    """A new empty sibling of `output_dir`, named and marked as this process's temporary."""
    pid = os.getpid()
    folder = output_dir.parent / f".{output_dir.name}.tmp-{pid}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    try:
        marker = {"pid": pid, "host": socket.gethostname(), "output": output_dir.name}
        (folder / OWNER_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _read_marker(folder: Path) -> dict | None:
    try:
        owner = json.loads((folder / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's process
        return True
    return True


def _names_no_file_but(err: OSError, tmp: Path) -> bool:
    """Whether `err` names no file, or only the temporary file `tmp` (a name that would only puzzle the user)."""
    if err.filename is None:
        return True
    return isinstance(err.filename, (str, bytes, os.PathLike)) and os.fsdecode(err.filename) == os.fspath(tmp)


def _write_error(output_dir: Path, err: BaseException) -> OSError | None:
    """An OSError naming `output_dir` and the reason for a failure of the file system (its errno and subclass kept,
    e.g. PermissionError), else None.

    safetensors reports its own I/O failures (a full disk while the weights are written) as SafetensorError with
    the OS error number in its text; those count too.
    """
    if isinstance(err, OSError):
        code, reason = err.errno, err.strerror or str(err)
        if err.filename is not None and not any(_TMP_NAME.match(part) for part in Path(err.filename).parts):
            reason = f"{reason}: {err.filename}"  # a path inside our temporary would only puzzle
    elif (code := os_error_number(err)) is not None:
        reason = f"{os.strerror(code)} (while writing the weights)"
    else:
        return None
    message = f"Cannot write the output folder {output_dir}: {reason}. Nothing was written."
    if code is None:
        return OSError(message)
    error = type(OSError(code, reason))(message)  # the subclass the errno maps to: PermissionError, ...
    error.errno = code
    return error


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM / SIGHUP while an output is written, so that it is cleaned up."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def _stop_signals_raise():
    """Turn SIGTERM / SIGHUP into `_Stopped` for the duration (when they would otherwise end the process on the spot),
    then deliver the signal again with its previous handling once the `with` body has cleaned up.

    Only in the main thread (the only one where Python runs signal handlers), and only for signals left at their
    default: a handler someone else installed (a launcher, a test runner) keeps the decision.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    ours = [signum for signum in _STOP_SIGNALS if signal.getsignal(signum) == signal.SIG_DFL]

    def stop(signum, frame):
        for other in ours:  # a second signal must not interrupt the cleanup
            signal.signal(other, signal.SIG_IGN)
        raise _Stopped(signum)

    for signum in ours:
        signal.signal(signum, stop)
    try:
        yield
    except _Stopped as stopped:
        for signum in ours:
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), stopped.signum)
        raise  # only if the default action did not end the process
    finally:
        for signum in ours:
            signal.signal(signum, signal.SIG_DFL)


__all__ = [
    "OWNER_MARKER", "check_output_dir", "check_writable", "os_error_number", "remove_stale_temporaries",
    "write_failure", "write_file_atomically", "write_folder_atomically",
]
