"""`auroralong tome-viz`: the command's face (see auroralong_hf/commands/__init__.py)."""

from ..tome_viz import add_arguments, run

__all__ = ["add_arguments", "run"]
