"""``hypernoise prompt-mix``: the authors' training prompts, assembled from the user's copies.

    hypernoise prompt-mix --compbench T2I-CompBench/examples/dataset --abc-6k HyperNoise/assets/ABC-6K.txt \
        --pickapic HyperNoise/assets/pickapic_prompts.json --out paper_mix.json

writes a JSON list of prompts in the authors' order (``prompts.paper_mix``: the seven T2I-CompBench
training files, ABC-6K, Pick-a-Pic, each once), duplicates kept as theirs are (``--drop-duplicates``
to drop them), and prints what each source gave. Train on it with ``hypernoise train --prompts
paper_mix.json --prompt-duplicates keep``.
"""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    p.add_argument("--compbench", required=True, metavar="DIR",
                   help="T2I-CompBench's examples/dataset folder (the seven *_train.txt the authors read)")
    p.add_argument("--abc-6k", required=True, metavar="FILE", help="ABC-6K.txt (the authors' assets/ABC-6K.txt)")
    p.add_argument("--pickapic", required=True, metavar="FILE",
                   help="pickapic_prompts.json (the authors' assets/pickapic_prompts.json)")
    p.add_argument("--drop-duplicates", action="store_true",
                   help="keep the first of each repeated prompt (the authors keep every one)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="the JSON list of prompts to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args) -> int:
    from pathlib import Path

    from hypernoise.errors import ConfigError, OutputExistsError
    from hypernoise.prompts import paper_mix

    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".json":
        raise ConfigError(f"--out {out} must be a .json file (a JSON list of prompts, which --prompts reads)")
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it, or another --out")
    mix = paper_mix(Path(args.compbench), Path(args.abc_6k), Path(args.pickapic), keep_duplicates=not args.drop_duplicates)
    _write(out, mix.prompts)
    counts = ", ".join(f"{name} {n:,}" for name, n in mix.counts.items())
    kept = "dropped" if args.drop_duplicates else "kept, as the authors keep them"
    print(f"{counts}; {len(mix.prompts):,} prompts written to {out} ({mix.duplicates:,} duplicates {kept})")
    if mix.blank_lines:
        print(f"note: ABC-6K has {mix.blank_lines} blank lines, which the authors' reader keeps as empty prompts; "
              f"they are left out here")
    return 0


def _write(out, prompts: list) -> None:
    """The list as JSON, written to a temporary file and renamed into place (never half a file)."""
    import os

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(prompts, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    os.replace(tmp, out)
