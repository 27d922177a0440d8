"""`auroralong train`: the command's face (see auroralong_hf/commands/__init__.py)."""

from ..training.train import add_arguments, run

__all__ = ["add_arguments", "run"]
