"""The `auroralong` command line: describe, create-random, generate, convert, tome-viz, bench, train.

`COMMANDS` is the table: each command's module declares its options (`add_arguments`) and runs it (`run`), and is
imported only when that command is asked for. `auroralong --help` loads neither torch nor transformers when started
through the console script (see `auroralong_cli` and the `auroralong_hf` docstring for why Auto registration waits),
and neither do `describe`, `create-random` and `bench` before they run; tests/test_cli.py checks both.
"""

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterable

import auroralong_hf

# command -> (one-line help, its module: `add_arguments(parser)` declares its options, `run(args) -> int` runs it).
# A module is imported only when its command is asked for, so `auroralong --help` loads none of them.
COMMANDS = {
    "describe": ("answer a question about a video, streaming it through the RNN state; report the cost",
                 "auroralong_hf.commands.describe"),
    "generate": ("continue a text prompt with an RWKV-6 model", "auroralong_hf.commands.generate"),
    "create-random": ("write a model + processor folder with random weights", "auroralong_hf.commands.create_random"),
    "convert": ("convert checkpoints into save_pretrained folders", "auroralong_hf.commands.convert"),
    "tome-viz": ("draw S-ToMe's merged groups and the tokens' visiting order over an image or video's frames",
                 "auroralong_hf.commands.tome_viz"),
    "bench": ("efficiency benchmarks", "auroralong_hf.commands.bench"),
    "train": ("train a stage (pretrain | vision | language) on LLaVA-style conversations with HF Trainer; "
              "TrainingArguments options (--max_steps, ...) pass through; multi-GPU: accelerate launch",
              "auroralong_hf.commands.train"),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, with the options of those in `commands` (default: all), whose modules it
    imports."""
    parser = argparse.ArgumentParser(prog="auroralong", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    with_options = set(COMMANDS if commands is None else commands)
    for name, (help_text, module_name) in COMMANDS.items():
        command = subparsers.add_parser(name, help=help_text)
        if name in with_options:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(run=module.run)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that bad input raises, which the command line reports as one `error:` line (exit 2).

    - ValueError: our own checks name the thing and the reason; it includes json.JSONDecodeError and
      UnicodeDecodeError (a file that is not JSON or not UTF-8).
    - OSError: what the operating system says about a path (FileNotFoundError, FileExistsError, PermissionError,
      IsADirectoryError, NotADirectoryError, a full disk's ENOSPC, a read-only file system's EROFS, network errors
      and timeouts), reported with the path it names.
    - RuntimeError: torch's errors about its inputs (a .pth that is not a checkpoint, out of memory).
    - safetensors' SafetensorError: a weights or state file that is truncated or not safetensors.
    - huggingface_hub's StrictDataclassError: a config.json value that the config class's validation refuses.
    - PyAV's FFmpegError: a media file or stream that ffmpeg cannot read.

    Nothing broader, Exception in particular: a TypeError, AttributeError, KeyError, IndexError, ... out of a command
    is a bug in this package, and its traceback is what a report of it needs. Imported here, when an error is being
    handled, so that building the parser stays light.
    """
    from av.error import FFmpegError
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError

    return ValueError, OSError, RuntimeError, SafetensorError, StrictDataclassError, FFmpegError


def error_line(error: BaseException) -> str:
    """One line saying what went wrong: `PATH: REASON` for an OSError (or PyAV's FFmpegError) that names its path,
    else the message; the line breaks some libraries put in their messages are folded into spaces."""
    filename, reason = getattr(error, "filename", None), getattr(error, "strerror", None)
    if filename is not None and reason:
        where = os.fsdecode(filename) if isinstance(filename, bytes) else str(filename)
        if isinstance(getattr(error, "filename2", None), str):  # rename, link: the source and the destination
            where += f" -> {error.filename2}"
        text = f"{where}: {reason}"
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*\n\s*", " ", text.strip())


def main(argv=None) -> int:
    """Run the command line; returns the exit status: 0, 2 for bad input (one `auroralong CMD: error: ...` line on
    stderr, no traceback) or 130 when interrupted (Ctrl-C).

    130 and not 2 on Ctrl-C: 128 + SIGINT is what a shell reports for a program that the interrupt ended, so scripts
    and `make` tell "the user stopped it" from "the input was bad". The commands write their outputs (states, model
    folders, images) under a temporary name that is removed on any exception, KeyboardInterrupt included, and renamed
    when complete, so an interrupt leaves no half-written output (Trainer's own checkpoint-N folders aside).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[:1] if argv[:1] and argv[0] in COMMANDS else ()).parse_args(argv)
    try:
        # deferred while the parser was built (console script); a no-op when the package registered on import
        auroralong_hf.register_auto_classes()
        return args.run(args)
    except KeyboardInterrupt:
        print(f"auroralong {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not isinstance(error, user_errors()):
            raise
        print(f"auroralong {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
