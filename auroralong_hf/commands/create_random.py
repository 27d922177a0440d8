"""`auroralong create-random`: the command's face (see auroralong_hf/commands/__init__.py)."""

from ..create_random import add_arguments, run

__all__ = ["add_arguments", "run"]
