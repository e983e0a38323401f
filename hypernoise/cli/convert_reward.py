"""``hypernoise convert-reward``: convert an original reward checkpoint once into a fast folder."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("name", help="hps, imagereward, aesthetic, clip or pickscore")
    p.add_argument("source", help="the original weights: a file (HPS_v2.1_compressed.pt, ImageReward.pt, ...), a folder or a Hub id")
    p.add_argument("--out", required=True, help="folder to write (use it as the reward's weights afterwards)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder's contents")
    p.add_argument("--tokenizer", default=None, help="tokenizer id or folder to bundle")
    p.add_argument("--head-file", default=None, help="aesthetic: the head's file name inside SOURCE")
    p.add_argument("--clip-pretrained", default=None, help="aesthetic: the CLIP ViT-L/14 to bundle")
    p.add_argument("--allow-pickle", action="store_true", help="trust torch files that hold Python objects")


def run(args) -> int:
    from hypernoise.rewards.convert import convert_reward

    options = {k: v for k, v in {"tokenizer": args.tokenizer, "head_file": args.head_file,
                                 "clip_pretrained": args.clip_pretrained}.items() if v is not None}
    folder = convert_reward(args.name, args.source, args.out, overwrite=args.overwrite,
                            allow_pickle=args.allow_pickle, **options)
    print(f"wrote {folder}; use it with --reward-weights {args.name}={folder}")
    return 0
