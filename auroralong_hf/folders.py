"""Writing output folders safely: a converter or generator writes into a temporary sibling, then renames it."""

import shutil
import uuid
from pathlib import Path


def check_output_dir(output_dir, overwrite: bool) -> Path:
    """The absolute output folder; FileExistsError if it is a file, or a non-empty folder without `overwrite`."""
    output_dir = Path(output_dir).expanduser().absolute()
    if output_dir.exists():
        if not output_dir.is_dir():
            raise FileExistsError(f"{output_dir} exists and is not a folder.")
        if any(output_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{output_dir} is not empty; pass --overwrite (overwrite=True) to replace it.")
    return output_dir


def write_folder_atomically(output_dir: Path, write) -> None:
    """Run `write(tmp_dir)` in a temporary sibling folder, then rename it to `output_dir`.

    On any failure the temporary folder is deleted and an existing `output_dir` is left as it was; a replaced
    `output_dir` (overwrite) is moved aside first and deleted only after the rename succeeded.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = output_dir.parent / f".{output_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    old_dir = None
    try:
        tmp_dir.mkdir()
        write(tmp_dir)
        if output_dir.exists():
            # Empty, or overwrite=True: move the old folder aside first, delete it only after the rename.
            old_dir = output_dir.parent / f".{output_dir.name}.old-{uuid.uuid4().hex[:8]}"
            output_dir.rename(old_dir)
        tmp_dir.rename(output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old_dir is not None and old_dir.exists() and not output_dir.exists():
            old_dir.rename(output_dir)
        raise
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
