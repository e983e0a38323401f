"""``hypernoise convert-geneval CKPT --out DIR``: the official GenEval detector checkpoint, once,
as a safetensors folder that ``hypernoise geneval --detector DIR`` loads without unpickling."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("source", metavar="CKPT",
                   help="the official mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth (mmdetection 2.x layout)")
    p.add_argument("--out", required=True, help="folder to write (pass it as --detector afterwards)")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier conversion wrote there")


def run(args) -> int:
    from hypernoise.geneval.checkpoint import convert_detector

    folder = convert_detector(args.source, args.out, overwrite=args.overwrite)
    print(f"wrote {folder}; use it with --detector {folder}")
    return 0
