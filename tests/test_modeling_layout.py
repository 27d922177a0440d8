"""The layout tells the architecture; these checks keep it so (the one home of layout checks).

Import direction. `modeling/` and `processing/` travel as remote code: `save_pretrained` copies a model's or a
processor's module and the files it imports relatively into the saved folder, which then loads where this package is
not installed (tests/test_remote_code.py). So `modeling/` imports nothing from the package outside `modeling/`, and
`processing/` nothing outside `processing/` (in particular nothing from `modeling/`). An import breaks the rule when
it is absolute and names the package (`auroralong_hf...`, or the source folders `modeling...` / `processing...`,
which resolve only from the repository root), or relative and climbs out of its folder (`from ..modeling import x`
in `processing/tokenization.py`). Every import statement counts, function-local ones included; the files are read
with `ast`, not imported.

Module size. No module in `auroralong_hf/`, `modeling/` or `processing/` is longer than `MAX_LINES` lines unless its
module docstring says why: a line of the docstring starts with "Long because" and gives the reason, e.g.

    Long because the five decoders share one frame-timing contract that reads best in one place.

The reason sits at the top of the module, where a reader meets the length first.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "auroralong_hf"
SOURCE_FOLDERS = ("modeling", "processing")  # installed as auroralong_hf.modeling and auroralong_hf.processing
MAX_LINES = 650
LENGTH_REASON = "Long because"


def imports_leaving_folder(source: str, filename: str, depth: int) -> list[str]:
    """The import statements in `source` that reach outside the folder the file lives in, as `line N: <statement>`.

    `depth`: how far below the folder's root the file sits (1 for `folder/x.py` and `folder/__init__.py`, 2 for
    `folder/sub/x.py`): a relative import of more levels than that climbs out of the folder.
    """
    leaving = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            absolute = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            absolute = [node.module] if node.level == 0 else []
            if node.level > depth:
                leaving.append(f"line {node.lineno}: {ast.unparse(node)}")
                continue
        else:
            continue
        if any(name.split(".")[0] in (PACKAGE, *SOURCE_FOLDERS) for name in absolute):
            leaving.append(f"line {node.lineno}: {ast.unparse(node)}")
    return leaving


def has_length_reason(source: str) -> bool:
    """Whether the module docstring of `source` has a line starting with "Long because"."""
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return any(line.strip().startswith(LENGTH_REASON) for line in docstring.splitlines())


def python_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return files


def test_modeling_and_processing_import_only_their_own_folder():
    """modeling/ imports nothing else from the package; processing/ nothing from modeling/ (nor the package)."""
    broken = []
    for folder in SOURCE_FOLDERS:
        files = python_files(folder)
        assert len(files) >= 4, f"{folder}/ holds only {[path.name for path in files]}: a check in the wrong place"
        for path in files:
            depth = len(path.relative_to(ROOT / folder).parts)
            broken += [f"{path.relative_to(ROOT)} {where}"
                       for where in imports_leaving_folder(path.read_text(), str(path), depth)]
    assert not broken, (
        "modeling/ and processing/ travel as remote code in saved folders and may import only from their own "
        "folder (see this file's docstring):\n" + "\n".join(broken)
    )


def test_the_import_check_sees_what_it_must():
    planted = {
        "def f():\n    from ..modeling.configuration_siglip_tome import tokens_per_frame\n":
            ["line 2: from ..modeling.configuration_siglip_tome import tokens_per_frame"],
        "from .. import registration\n": ["line 1: from .. import registration"],
        "import auroralong_hf.measure\n": ["line 1: import auroralong_hf.measure"],
        "from auroralong_hf.measure import PeakMemory\n": ["line 1: from auroralong_hf.measure import PeakMemory"],
        "from modeling.wkv6 import wkv6_step\n": ["line 1: from modeling.wkv6 import wkv6_step"],
        "import torch, processing\n": ["line 1: import torch, processing"],
    }
    for source, expected in planted.items():
        assert imports_leaving_folder(source, "planted.py", depth=1) == expected, source
    fine = "import torch\nfrom . import wkv6\nfrom .cache_rwkv6 import Rwkv6Cache\nfrom transformers import Cache\n"
    assert imports_leaving_folder(fine, "fine.py", depth=1) == []
    assert imports_leaving_folder("from ..wkv6 import wkv6_step\n", "sub/planted.py", depth=2) == []


def test_no_module_is_long_without_a_reason():
    too_long = []
    for folder in (PACKAGE, *SOURCE_FOLDERS):
        for path in python_files(folder):
            source = path.read_text()
            lines = len(source.splitlines())
            if lines > MAX_LINES and not has_length_reason(source):
                too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not too_long, (
        f"Modules over {MAX_LINES} lines: split them, or give the reason in the module docstring on a line starting "
        f"with {LENGTH_REASON!r}:\n" + "\n".join(too_long)
    )


def test_the_length_reason_is_read_from_the_module_docstring():
    assert has_length_reason('"""Readers.\n\nLong because the decoders share one contract.\n"""\nx = 1\n')
    assert not has_length_reason('"""Readers."""\n# Long because of a comment, not the docstring\n')
    assert not has_length_reason('x = 1\n"""Long because a string later is no docstring."""\n')
