"""The lmms-eval integration's layout: lmms-eval is an optional extra, so only the modules of `auroralong_hf.eval`
that are the glue import it (at their top), the answering they call works without it, and the entry point lmms-eval
reads resolves to the manifest in `auroralong_hf.eval`."""

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

# Modules that must import with lmms-eval absent, and those that must say at once that they need it.
WITHOUT_LMMS_EVAL = ("auroralong_hf", "auroralong_hf.eval", "auroralong_hf.answering")
NEED_LMMS_EVAL = ("auroralong_hf.eval.adapter", "auroralong_hf.eval.compat", "auroralong_hf.eval.manifest",
                  "auroralong_hf.eval.scoring")


def run_without_lmms_eval(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter in which `import lmms_eval` (and its submodules) raises ImportError."""
    blocker = "import sys\nsys.modules['lmms_eval'] = None\n"  # None in sys.modules: ImportError on import
    return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_the_answering_and_the_package_face_import_without_lmms_eval():
    done = run_without_lmms_eval(f"""
        import importlib
        import sys
        for name in {WITHOUT_LMMS_EVAL!r}:
            importlib.import_module(name)
        for name in {NEED_LMMS_EVAL!r}:  # imported by none of them
            assert name not in sys.modules, name
        from auroralong_hf.answering import Answerer, Prompt, UnreadableVisual, Visual, frame_time
    """)
    assert done.returncode == 0, done.stderr


def test_the_glue_modules_need_lmms_eval_at_their_top():
    done = run_without_lmms_eval(f"""
        import importlib
        for name in {NEED_LMMS_EVAL!r}:
            try:
                importlib.import_module(name)
            except ImportError as error:
                assert "lmms_eval" in str(error) or "lmms-eval" in str(error), (name, error)
                print(name, "needs lmms-eval:", error)
            else:
                raise AssertionError(f"{{name}} imports without lmms-eval")
    """)
    assert done.returncode == 0, done.stderr
    # the manifest, which lmms-eval loads for every run, says what to install
    assert "pip install -e '.[eval]'" in done.stdout, done.stdout


def test_the_entry_point_resolves_to_the_manifest():
    (entry,) = [e for e in entry_points(group="lmms_eval.models") if e.name == "auroralong"]
    assert entry.value == "auroralong_hf.eval.manifest:auroralong_manifest"
    from auroralong_hf.eval import manifest

    assert entry.load() is manifest.auroralong_manifest
    chosen = manifest.auroralong_manifest()
    assert (chosen.simple_class_path, chosen.chat_class_path) == (
        "auroralong_hf.eval.adapter.AuroraLongLmms", "auroralong_hf.eval.adapter.AuroraLongLmmsChat")
