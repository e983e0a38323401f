"""The authors' bf16 LoRA weights against fp32 on the built-in world: how much of the gain each reaches.

    python benchmarks/lora_precision.py           # ~25 min on one core; benchmarks/results/lora_precision.json
    python benchmarks/lora_precision.py --quick   # a smoke run: 4 steps, 1 seed, nothing written

Trains the world's main job (its preset, seed 0, as ``hypernoise train`` with no arguments) twice,
with fp32 LoRA weights (the default) and with bf16 weights and no fp32 copy (``--lora-dtype
bfloat16``, the authors' runs), then reads base and HyperNoise on the 960 test images (120 balanced
entries x 8 seeds, ``evaluation.before_after``). The fp32 run also counts the weight updates that a
bf16 weight would have lost: updates after which the bf16-rounded weight is unchanged.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from hypernoise.evaluation import before_after
from hypernoise.generators import build_generator
from hypernoise.methods import TRAINING
from hypernoise.presets import default_config
from hypernoise.training import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "lora_precision.json"


class LostUpdates:
    """Counts, over optimizer steps, the weight updates that bf16 storage would round away."""

    def __init__(self, optimizer, params):
        self.params, self.updates, self.lost, self._before = params, 0, 0, []
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        inner.register_step_pre_hook(self._pre)
        inner.register_step_post_hook(self._post)

    def _pre(self, *_):
        self._before = [p.detach().clone() for p in self.params]

    def _post(self, *_):
        for p, w in zip(self.params, self._before):
            changed = p.detach() != w
            self.updates += int(changed.sum())
            self.lost += int((changed & (p.detach().bfloat16() == w.bfloat16())).sum())


def run(dtype: str, out: Path, quick: bool = False) -> dict:
    gen = build_generator("shapes")
    short = dict(steps=4, init_trials=1) if quick else {}
    cfg = default_config(gen, lora_dtype=dtype, progress=False, checkpoint_every=0, **short)
    task = TRAINING.build("hypernoise", cfg=cfg, generator=gen)
    trainer = Trainer(task, cfg.train, out)
    counter = LostUpdates(trainer.optimizer, task.trainable_parameters()) if dtype == "float32" else None
    t0 = time.perf_counter()
    trainer.fit(gen.default_prompts("train"))
    seconds = time.perf_counter() - t0
    scores = before_after(gen, task.hypernet, gen.default_prompts("test"), seeds=range(1 if quick else 8))
    return {"lora_dtype": dtype, "train_seconds": round(seconds, 1),
            **{k: scores[k]["geneval"]["overall"] for k in ("base", "hypernoise")},
            "fidelity": {k: scores[k].get("fidelity") for k in ("base", "hypernoise")},
            **({"updates": counter.updates, "updates_lost_in_bf16": counter.lost} if counter else {})}


def main() -> int:
    torch.set_num_threads(1)
    quick, rows = "--quick" in sys.argv, []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            rows.append(run(dtype, Path(tmp) / dtype, quick))
            print(json.dumps(rows[-1]), flush=True)
    fp32, bf16 = rows
    share = (bf16["hypernoise"] - bf16["base"]) / ((fp32["hypernoise"] - fp32["base"]) or float("nan"))
    if not quick:
        RESULTS.write_text(json.dumps({"runs": rows, "bf16_share_of_fp32_gain": share}, indent=1) + "\n")
    print(f"bf16 reaches {share:.0%} of the fp32 gain; {fp32['updates_lost_in_bf16'] / fp32['updates']:.0%} of the "
          f"fp32 run's updates would round away in bf16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
