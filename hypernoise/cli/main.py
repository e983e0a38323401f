"""``hypernoise <command>``: each command module registers ``add_arguments`` and ``run``.

Errors the library raises on purpose (``HypernoiseError``) and bad arguments become one line on
stderr and exit status 2 (1 for failures during a run), with no traceback. Library messages name
config fields in backquotes (`` `train.batch_size` ``); ``as_flags`` rewrites each to the flag of
the running command that sets it (``--batch-size``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import re
import signal
import sys
from typing import Optional, Sequence

from hypernoise import __version__
from hypernoise.errors import HypernoiseError

#: command name -> module under hypernoise.cli with add_arguments(parser) and run(args) -> int
COMMANDS = {
    "train": ("train", "train a noise hypernetwork (or a fine-tuning LoRA) against a reward"),
    "generate": ("generate", "generate images, with or without a noise hypernetwork"),
    "optimize": ("optimize", "ReNO: optimise the initial noise of each prompt against a reward"),
    "evaluate": ("evaluate", "evaluate a method on a prompt set: rewards, GenEval-style scores, fidelity, cost"),
    "bench": ("bench", "base, HyperNoise, ReNO, best-of-N and direct fine-tuning side by side: quality, fidelity, cost"),
    "world": ("world", "retrain the built-in shapes world's generator, evaluator or reward from scratch"),
    "toy2d": ("toy2d", "the analytic 2-D world: train and check against the exact tilted distribution"),
    "rewards": ("rewards", "list the rewards and where each loads its weights from"),
    "convert-reward": ("convert_reward", "convert an original reward checkpoint once into a fast safetensors folder"),
}


#: config field (or its last dotted part) -> the flag's dest, where the two names differ
FIELD_ALIASES = {"passes": "hypernet_passes", "kind": "objective", "lora.alpha": "lora_alpha", "out_dir": "out",
                 "objective.alpha": "alpha", "reno.iters": "iters"}
_FIELD = re.compile(r"`([A-Za-z_][A-Za-z_0-9.]*)`")


def as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with each backquoted config field replaced by ``parser``'s flag for it (the
    bare field name where the command has no such flag)."""
    flags = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}

    def flag(match: re.Match) -> str:
        field = match.group(1)
        leaf = field.rsplit(".", 1)[-1]
        for name in (FIELD_ALIASES.get(field), field, FIELD_ALIASES.get(leaf), leaf):
            if name in flags:
                return flags[name]
        return field

    return _FIELD.sub(flag, message)


#: argparse's "argument --lr: must be ..." (a value refused by a type of cli.common)
_TYPE_ERROR = re.compile(r"^argument (\S+): (must .*)$", re.S)

#: commands that may start a distributed training run: their launch environment is checked first
TRAINING_COMMANDS = ("train", "bench", "toy2d")


#: errno of a failed write -> what to do; reported in one line, exit status 1
WRITE_FAILURES = {errno.ENOSPC: "free space on the disk or pass another --out",
                  errno.EDQUOT: "free space within your quota or pass another --out",
                  errno.EFBIG: "raise the file-size limit (ulimit -f) or pass another --out",
                  errno.EROFS: "the file system is read-only: pass another --out"}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (usage stays in --help); a value refused by one of
    cli.common's types reads "--lr must be a finite number, got nan", as the library's errors do."""

    def error(self, message: str):
        match = _TYPE_ERROR.match(message)
        if match:
            message = f"{max(match.group(1).split('/'), key=len)} {match.group(2)}"
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hypernoise", description="Noise hypernetworks for distilled diffusion models.")
    parser.add_argument("--version", action="version", version=f"hypernoise {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(f"hypernoise.cli.{module}")
        mod.add_arguments(cmd)
        cmd.set_defaults(_run=mod.run, _parser=cmd)
    return parser


def _interrupt(signum, _frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt inside the block (the trainer installs its own handler for
    its loop); the previous handler is restored at exit. Outside the main thread: left alone."""
    try:
        old = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # bad arguments (one line already printed) or --help
        return int(e.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    with _sigterm_as_interrupt():  # SIGTERM stops like Ctrl-C: what is finished is kept
        return _run(args)


def _run(args) -> int:
    try:
        if args.command in TRAINING_COMMANDS:  # a garbage or half-set WORLD_SIZE/RANK: one line, before any model
            from hypernoise.devices import check_launch_env

            check_launch_env()
        return int(args._run(args) or 0)
    except HypernoiseError as e:
        print(f"hypernoise {args.command}: error: {as_flags(str(e), args._parser)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"hypernoise {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in WRITE_FAILURES:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"hypernoise {args.command}: error: {e.strerror}{where}; {WRITE_FAILURES[e.errno]} (what was complete "
              f"is kept: checkpoints, adapters and images are written whole or not at all)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
