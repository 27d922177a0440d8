"""`auroralong describe`: the command's face (see auroralong_hf/commands/__init__.py)."""

from ..describe import add_arguments, run

__all__ = ["add_arguments", "run"]
