"""Entry point of the `auroralong` console script: the command line without paying for Auto registration at start.

Importing `auroralong_hf` registers its classes with transformers' Auto classes, which imports torch, transformers
and every model (seconds). This module lives outside the package so that it can set `DEFER_AUTO_REGISTRATION`
before the package is first imported; `auroralong_hf/__init__.py` reads it and skips registration, so
`auroralong --help` imports neither torch nor transformers. `auroralong_hf.cli.main` registers before it runs a
command.
"""

import sys

# Read by auroralong_hf/__init__.py (registration_deferred); only this process's import of the package is affected.
DEFER_AUTO_REGISTRATION = True


def main(argv=None) -> int:
    """Run the `auroralong` command line (`auroralong_hf.cli.main`) with registration deferred."""
    # Imported here, not at the top: the flag above must exist before the package's __init__ runs. If the package
    # was already imported (registered) in this process, nothing is deferred and nothing is lost.
    from auroralong_hf.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
