"""The command line's faces: one module per `auroralong` command, which `auroralong_hf.cli.COMMANDS` points at.

Each face declares its options (`add_arguments(parser)`) and runs the command (`run(args) -> int`). A face imports
only the standard library at its top, so that `auroralong --help` and `auroralong CMD --help` load neither torch nor
transformers (seconds; tests/test_cli.py checks it); its `run` imports the implementation, a library module whose
own imports are at its top. That one deferred import per command is the command line's lazy face.
"""
