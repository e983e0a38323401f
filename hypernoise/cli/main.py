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
from hypernoise.errors import HypernoiseError, Interrupted

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
    "geneval": ("geneval", "score a folder of images in GenEval's layout: the paper's metric, in plain PyTorch"),
    "convert-geneval": ("convert_geneval", "convert the official GenEval detector checkpoint once into a safetensors folder"),
    "convert-reward": ("convert_reward", "convert an original reward checkpoint once into a fast safetensors folder"),
    "push-to-hub": ("push_to_hub", "upload a trained adapter folder, with its model card, to the Hugging Face Hub"),
    "prompt-mix": ("prompt_mix", "assemble the authors' training prompts (T2I-CompBench, ABC-6K, Pick-a-Pic) from your copies"),
    "demo": ("demo", "a web page with base and HyperNoise side by side (and an API): hypernoise[demo]"),
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


#: command -> the flags that lower its memory, named (those the command has) when memory runs out
MEMORY_SETTINGS = {"train": ("--batch-size", "--gradient-checkpointing", "--height", "--width"),
                   "generate": ("--batch-size", "--height", "--width"),
                   "evaluate": ("--batch-size", "--n", "--height", "--width"),
                   "optimize": ("--height", "--width", "--optimize-steps"),
                   "bench": ("--n", "--height", "--width"),
                   "toy2d": ("--batch-size",)}
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|Cannot allocate memory", re.I)
#: an operation without a kernel for the run's dtype ("svd" not implemented for 'BFloat16', ...)
_NO_KERNEL = re.compile(r"^\W*(\w+)\W* not implemented for '(BFloat16|Half)'|Unsupported dtype (BFloat16|Half)|"
                        r"Low precision dtypes not supported")


def resource_failure(error: BaseException, parser: argparse.ArgumentParser, command: str) -> Optional[str]:
    """One line for a failure of the machine rather than of the code: memory exhausted (naming
    the settings of ``command`` that lower it) or an operation the device cannot run in the
    chosen dtype; None for any other error."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    flags = {s for a in parser._actions for s in a.option_strings}
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or _OUT_OF_MEMORY.search(text):
        lower = [f for f in MEMORY_SETTINGS.get(command, ()) if f in flags]
        fix = ("lower " + ", ".join(f for f in lower if f != "--gradient-checkpointing")
               + (" or pass --gradient-checkpointing" if "--gradient-checkpointing" in lower else "")) if lower \
            else "free memory or use a machine with more"
        return f"out of memory ({_allocation(text)}); {fix}"
    match = _NO_KERNEL.search(text)
    if match:
        dtype = "bfloat16" if "BFloat16" in text else "float16"
        op = f"{match.group(1)!r} " if match.group(1) else ""
        return (f"an operation {op}has no {dtype} kernel on this device ({text[:120]}); pass --dtype float32, or run "
                f"on a device that supports {dtype}")
    return None


def _allocation(text: str) -> str:
    """What the failed allocation asked for, short: "tried to allocate 1.1 TiB"."""
    match = re.search(r"tried to allocate (\d+) bytes", text, re.I)
    if match:
        size, unit = float(match.group(1)), "bytes"
        for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
            if size < 1024 or unit == "PiB":
                break
            size /= 1024
        return f"tried to allocate {size:.3g} {unit}"
    match = re.search(r"tried to allocate [\d.]+ \w+", text, re.I)  # CUDA: "Tried to allocate 20.00 GiB"
    return match.group(0) if match else text.split(". ")[0][:120]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (usage stays in --help); a value refused by one of
    cli.common's types reads "--lr must be a finite number, got nan", as the library's errors do."""

    def error(self, message: str):
        match = _TYPE_ERROR.match(message)
        if match:
            message = f"{max(match.group(1).split('/'), key=len)} {match.group(2)}"
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


#: names of diffusers' training scripts (and other usual spellings) -> this CLI's flag, underscores as hyphens
USUAL_NAMES = {"--learning-rate": "--lr", "--train-batch-size": "--batch-size", "--max-train-steps": "--steps",
               "--output-dir": "--out", "--output": "--out", "--pretrained-model-name-or-path": "--pretrained",
               "--resume-from-checkpoint": "--resume", "--checkpointing-steps": "--checkpoint-every",
               "--lr-warmup-steps": "--warmup-steps", "--iterations": "--iters", "--num-inference-steps": "--num-steps",
               "--validation-prompt": "--validation-prompts", "--adam-weight-decay": "--weight-decay",
               "--lora-rank": "--rank", "--model": "--pretrained", "--num-images-per-prompt": "--num-images"}


def unrecognized(extra: Sequence[str], parser: argparse.ArgumentParser) -> str:
    """argparse's "unrecognized arguments", with the flag of ``parser`` each unknown one most likely
    meant: diffusers' spelling (``--learning_rate`` -> ``--lr``), else the closest name."""
    import difflib

    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    meant = []
    for arg in (a.split("=", 1)[0].replace("_", "-") for a in extra if a.startswith("--")):
        guess = USUAL_NAMES.get(arg) if USUAL_NAMES.get(arg) in flags else (
            arg if arg in flags else next(iter(difflib.get_close_matches(arg, flags, n=1, cutoff=0.6)), None))
        if guess and guess not in meant:
            meant.append(guess)
    hint = f" (did you mean {' or '.join(meant)}?)" if meant else ""
    return f"unrecognized arguments: {' '.join(extra)}{hint}"


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
        args, extra = parser.parse_known_args(argv)
        if extra:  # refused by the command's own parser: its name, its --help, the flag meant
            command = getattr(args, "_parser", parser)
            command.error(unrecognized(extra, command))
    except SystemExit as e:  # bad arguments (one line already printed) or --help
        return int(e.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from hypernoise.allocator import tune

    tune()  # freed CPU tensors reused, not faulted back in at every step (hypernoise/allocator.py)
    with _sigterm_as_interrupt():  # SIGTERM stops like Ctrl-C: what is finished is kept
        return _run(args)


#: libraries with loading bars of their own, switched with the Hub's
_LOADERS = ("transformers", "diffusers")


@contextlib.contextmanager
def quiet_loading(enabled: bool = True):
    """Inside, the loading bars of the Hub, transformers and diffusers are off too (``--no-progress``):
    the Hub's switch (``HF_HUB_DISABLE_PROGRESS_BARS``), which transformers reads at import and
    ``generators.diffusers_common`` passes on to diffusers. Each is as it was at exit."""
    if not enabled:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hub_was_off = are_progress_bars_disabled()
    before = {name: sys.modules[name].utils.logging.is_progress_bar_enabled() for name in _LOADERS
              if sys.modules.get(name) is not None}
    disable_progress_bars()
    for name in before:
        sys.modules[name].utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if not hub_was_off:
            enable_progress_bars()
        for name in _LOADERS:  # a library imported inside starts as the Hub's switch was
            if sys.modules.get(name) is not None and before.get(name, not hub_was_off):
                sys.modules[name].utils.logging.enable_progress_bar()


def _run(args) -> int:
    try:
        from hypernoise.cli.common import check_invocation

        check_invocation(args, args._parser)  # an empty value, a garbage environment variable: one line
        if args.command in TRAINING_COMMANDS:  # a garbage or half-set WORLD_SIZE/RANK: one line, before any model
            from hypernoise.devices import check_launch_env

            check_launch_env()
        with quiet_loading(getattr(args, "no_progress", False)):
            return int(args._run(args) or 0)
    except HypernoiseError as e:
        print(f"hypernoise {args.command}: error: {as_flags(str(e), args._parser)}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:  # stopped by a signal after writing what was finished: says what and how to go on
        print(f"hypernoise {args.command}: {as_flags(e.message, args._parser)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"hypernoise {args.command}: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as e:
        line = resource_failure(e, args._parser, args.command)
        if line is None:
            raise
        print(f"hypernoise {args.command}: error: {line}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in WRITE_FAILURES:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"hypernoise {args.command}: error: {e.strerror}{where}; {WRITE_FAILURES[e.errno]} (what was complete "
              f"is kept: checkpoints, adapters and images are written whole or not at all)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
