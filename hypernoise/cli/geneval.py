"""``hypernoise geneval IMAGES_DIR --detector CKPT --out DIR``: score a folder in GenEval's layout.

What ``evaluation/evaluate_images.py`` and ``summary_scores.py`` of the official GenEval do, in
plain PyTorch: the Mask2Former detector read from the official checkpoint (or a folder written by
``hypernoise convert-geneval``), the CLIP ViT-L/14 colour classifier, the official rules. Writes
``OUT/results.jsonl`` (the official records, one per image, appended as images finish),
``OUT/summary.json`` and ``OUT/geneval.json`` (the settings); prints the paper's Table 1 row.
``--resume latest`` continues an interrupted run with the images not yet scored.
"""

from __future__ import annotations

from pathlib import Path

#: the official --options keys that are flags here (evaluate_images.py reads them from --options)
OPTION_FLAGS = ("threshold", "counting_threshold", "max_objects", "max_overlap", "position_threshold", "bgcolor",
                "crop")


def add_arguments(p) -> None:
    from hypernoise.cli.common import add_output_args, positive_int, threads_arg

    p.add_argument("images", metavar="IMAGES_DIR",
                   help="folder in GenEval's layout: <index>/metadata.jsonl and <index>/samples/<seed>.png")
    add_geneval_args(p, detector_required=True)
    r = p.add_argument_group("run")
    r.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--dtype", default=None, help="float32 (default: GenEval's numbers), bfloat16 or float16")
    r.add_argument("--batch-size", type=positive_int, default=4, help="images per detector batch (default 4)")
    r.add_argument("--threads", type=threads_arg, default=None, help="CPU threads (default: the idle cores)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--resume", nargs="?", const="latest", choices=["latest"], default=None,
                   help="continue an interrupted run in --out with the images not yet scored (same settings)")
    add_output_args(p)
    p.set_defaults(generator="geneval")


def add_geneval_args(p, detector_required: bool = False) -> None:
    """GenEval's models and rules: --detector, --clip and every official --options key as a flag
    (shared by ``geneval`` and ``evaluate --benchmark geneval``)."""
    from hypernoise.geneval.rules import GenEvalOptions

    d = GenEvalOptions()
    g = p.add_argument_group("GenEval (docs/geneval.md)")
    g.add_argument("--detector", required=detector_required, default=None, metavar="CKPT",
                   help="the official detector checkpoint (mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth, "
                        "see docs/geneval.md) or a folder written by `hypernoise convert-geneval`")
    g.add_argument("--clip", default="openai/clip-vit-large-patch14", metavar="ID_OR_DIR",
                   help="the colour classifier's CLIP ViT-L/14 (OpenAI weights): a Hub id or a local folder "
                        "(default openai/clip-vit-large-patch14)")
    g.add_argument("--clip-fp32", action="store_true",
                   help="run the colour classifier in float32; by default it runs as the official one does "
                        "(clip_benchmark's fp16 autocast on CUDA, float32 elsewhere)")
    g.add_argument("--threshold", type=float, default=None, help=f"detection score threshold (default {d.threshold})")
    g.add_argument("--counting-threshold", type=float, default=None,
                   help=f"score threshold of the counting task (default {d.counting_threshold})")
    g.add_argument("--max-objects", type=int, default=None, help=f"detections kept per class (default {d.max_objects})")
    g.add_argument("--max-overlap", type=float, default=None,
                   help=f"NMS IoU threshold, 1 for no NMS (default {d.max_overlap})")
    g.add_argument("--position-threshold", type=float, default=None,
                   help=f"margin of the position rules, as a fraction of the boxes' sizes (default {d.position_threshold})")
    g.add_argument("--bgcolor", default=None,
                   help=f"background the colour classifier sees around an object, or 'original' (default {d.bgcolor})")
    g.add_argument("--crop", choices=["0", "1"], default=None,
                   help="1: the colour classifier sees the object's box, 0: the whole image (default 1)")
    g.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE",
                   help="the official script's --options form (threshold=0.3 ...); a flag wins over the same key")


def options_from_args(args):
    """``GenEvalOptions`` from ``--options KEY=VALUE`` and the flags (a flag wins)."""
    from hypernoise.errors import ConfigError
    from hypernoise.geneval.rules import GenEvalOptions

    strings = {}
    for item in args.options or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--options takes KEY=VALUE items (e.g. threshold=0.3), got {item!r}")
        strings[key.strip()] = value
    strings.update({k: str(getattr(args, k)) for k in OPTION_FLAGS if getattr(args, k) is not None})
    return GenEvalOptions.from_strings(strings)


def load_scorer(args, batch_size: int):
    """The detector, the colour classifier and the rules the GenEval flags name, as a ``Scorer``,
    and the settings that identify them (checked on resume)."""
    from hypernoise.errors import ConfigError
    from hypernoise.geneval.colour import load_colour_classifier
    from hypernoise.geneval.detector import load_detector
    from hypernoise.geneval.scoring import Scorer

    if not args.detector:
        raise ConfigError("GenEval needs its detector: pass --detector CKPT (the official "
                          "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth, see docs/geneval.md)")
    options = options_from_args(args)
    detector = load_detector(args.detector, device=args.device, dtype=getattr(args, "geneval_dtype", args.dtype))
    colour = load_colour_classifier(args.clip, device=args.device, options=options, autocast=not args.clip_fp32)
    settings = {"detector": _where(args.detector), "clip": _where(args.clip), "clip_fp32": args.clip_fp32}
    return Scorer(detector, colour, options, batch_size), settings


def run(args) -> int:
    from hypernoise.cli.common import configure_threads
    from hypernoise.geneval.scoring import (RESULTS_FILE, SETTINGS_FILE, SUMMARY_FILE, find_samples, format_summary,
                                            score_folder)
    from hypernoise.geneval.report import REPORT_DIR
    from hypernoise.io import output_folder

    configure_threads(args)
    options_from_args(args)  # a bad rule value: one line, before any model loads
    find_samples(args.images)  # a folder that is not GenEval's layout: the same
    scorer, settings = load_scorer(args, args.batch_size)
    inputs = {"images": args.images, "detector": args.detector, "clip": args.clip}
    with output_folder(args.out, overwrite=args.overwrite, resume=bool(args.resume), inputs=inputs,
                       command="hypernoise geneval", writes=(RESULTS_FILE, SUMMARY_FILE, SETTINGS_FILE, REPORT_DIR)) as out:
        summary = score_folder(args.images, out, scorer, {**settings, "dtype": args.dtype}, resume=bool(args.resume),
                               progress=not args.no_progress)
        print(format_summary(summary))
        print(f"wrote {out}/{RESULTS_FILE} and {out}/{SUMMARY_FILE}")
        write_geneval_report(out / RESULTS_FILE, out)
        return 0


def write_geneval_report(records_file, out) -> None:
    """Draw what GenEval saw (``geneval.report``) from a records file into ``out/report``, and say where."""
    from hypernoise.geneval.report import REPORT_DIR, write_report
    from hypernoise.geneval.scoring import read_records

    if write_report(read_records(records_file), out):
        print(f"what GenEval saw: {out}/{REPORT_DIR}/ (one grid per task, wrong images first; tasks.png)")


def _where(source: str) -> str:
    """A local path made absolute (a resume from another folder names the same file); a Hub id as given."""
    path = Path(source)
    return str(path.resolve()) if path.exists() else source
