"""Memory at the paper's prompt scale: long training runs over 100k distinct prompts with a bounded cache.

    python benchmarks/prompt_scale.py            # ~15 min on 2 cores; table + benchmarks/results/prompt_scale.json
    python benchmarks/prompt_scale.py --quick    # a smoke run (the tests use it)

Trains the tiny SANA-Sprint pipeline (random weights, built from configs: hypernoise.generators.tiny;
Gemma-2 embeddings of 300 tokens, as the real model's) at 64 px on a file of N distinct prompts,
batch 8, each run in a fresh process:

- ``steps-S`` for each S of ``--steps`` (default 40, 400, 1200, 4000) with ``--prompt-cache-mb LIMIT``:
  S x 8 distinct prompts seen, up to the whole file and round it again;
- ``unbounded``: the second length with a cache larger than every prompt it sees (the check's
  teeth: what memory does when the cache is not bounded);
- ``no-cache``: the second length with no cache (``--prompt-cache-mb 0``): what encoding new
  prompts costs by itself, to tell it from the cache's.

Each process records its resident memory (``/proc/self/statm``) after every training step; a run's
peak is the largest of those (start-up and the closing report are not training), reported with the
peak of each half of the run and the process's own peak (``ru_maxrss``). Goals: the longest run's
peak within 5 % of the second's (issue 30: 4000 steps against 400) and the second's within 10 % of
the first's (issue 22). The unbounded run shows the same measurement moving.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "prompt_scale.json"

#: runs in the child process: train, sampling RSS; prints one JSON line
CHILD = r"""
import json, os, resource, sys, time
import torch
torch.set_num_threads(1)
from hypernoise.cli.main import main
from hypernoise.training import trainer

page = os.sysconf("SC_PAGE_SIZE")
rss = []  # resident memory after each training step
step = trainer.Trainer._train_step

def measured_step(self, *args, **kwargs):
    out = step(self, *args, **kwargs)
    with open("/proc/self/statm") as f:
        rss.append(int(f.read().split()[1]) * page / 2**20)
    return out

trainer.Trainer._train_step = measured_step
t0 = time.perf_counter()
code = main(json.loads(sys.argv[1]))
print(json.dumps({"code": code, "seconds": time.perf_counter() - t0, "rss_mb": rss,
                  "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_prompts(path: Path, n: int) -> None:
    """``n`` distinct ordinary prompts, one per line."""
    things = ["apple", "bicycle", "lighthouse", "teapot", "fox", "violin", "cactus", "sailboat", "owl", "lantern"]
    colors = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"a {colors[i % 8]} {things[(i // 8) % 10]} on a table, photo number {i}\n")


def run(folder: Path, prompts: Path, out: Path, steps: int, batch: int, cache_mb: float, side: int) -> dict:
    argv = ["train", "--generator", "auto", "--pretrained", str(folder), "--device", "cpu", "--reward", "redness",
            "--prompts", str(prompts), "--steps", str(steps), "--batch-size", str(batch), "--rank", "2",
            "--height", str(side), "--width", str(side), "--prompt-cache-mb", str(cache_mb),
            "--checkpoint-every", str(steps), "--eval-seeds", "1", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def _plan(lengths: list, cache_mb: float) -> list:
    """(name, steps, cache bound) of each run: every length with the bound, then the teeth at the second length."""
    teeth = lengths[1] if len(lengths) > 1 else lengths[0]
    return ([(f"steps-{n}", n, cache_mb) for n in lengths]
            + [("unbounded", teeth, 1e6), ("no-cache", teeth, 0)])


def _measure(name, steps, cache, args, folder, prompts, tmp) -> dict:
    t = time.perf_counter()
    measured = run(folder, prompts, tmp / name, steps, args.batch_size, cache, args.side)
    rss, half = measured.pop("rss_mb"), steps // 2
    row = {"steps": steps, "prompt_cache_mb": cache, "distinct_prompts_seen": min(args.prompts, steps * args.batch_size),
           **measured, "peak_mb": max(rss), "first_half_mb": max(rss[:half]), "second_half_mb": max(rss[half:]),
           "rss_mb_every_step": [round(r, 1) for r in rss[:: max(1, steps // 40)]]}
    print(f"{name:>11}: {steps} steps, peak {row['peak_mb']:.0f} MB ({time.perf_counter() - t:.0f} s)",
          file=sys.stderr, flush=True)
    return row


def _table(runs: dict) -> None:
    print("| run | steps | distinct prompts seen | cache bound (MB) | peak RSS in training (MB) | 1st half | 2nd half | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        mb = r["prompt_cache_mb"]
        bound = "unbounded" if mb >= 1e6 else "0 (off)" if mb == 0 else f"{mb:g}"
        print(f"| {name} | {r['steps']} | {r['distinct_prompts_seen']} | {bound} | {r['peak_mb']:.0f} | "
              f"{r['first_half_mb']:.0f} | {r['second_half_mb']:.0f} | {r['seconds']:.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=100_000, help="distinct prompts in the file (default 100k)")
    p.add_argument("--steps", default="40,400,1200,4000", help="run lengths, comma-separated (default 40,400,1200,4000)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step (default 8)")
    p.add_argument("--side", type=int, default=64, help="image height and width in pixels (default 64)")
    p.add_argument("--cache-mb", type=float, default=16, help="the bound under test (default 16 MB)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2k prompts, 4, 40 and 80 steps of 8 at 32 px")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.steps, args.batch_size, args.side = 2_000, "4,40,80", 8, 32
    lengths = [int(n) for n in args.steps.split(",") if n.strip()]
    from hypernoise.generators.tiny import save_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = save_tiny_pipeline("sana-sprint", tmp / "sana", seed=0)
        prompts = tmp / "prompts.txt"
        write_prompts(prompts, args.prompts)
        runs = {name: _measure(name, steps, cache, args, folder, prompts, tmp)
                for name, steps, cache in _plan(lengths, args.cache_mb)}
    peak = {n: runs[f"steps-{n}"]["peak_mb"] for n in lengths}
    first, second, last = lengths[0], lengths[min(1, len(lengths) - 1)], lengths[-1]
    flat, grown = peak[last] / peak[second], peak[second] / peak[first]
    teeth = runs["unbounded"]["peak_mb"] / peak[first]
    cache_share = peak[second] - runs["no-cache"]["peak_mb"]
    met = flat <= 1.05 and grown <= 1.10
    result = {"prompts_in_file": args.prompts, "batch_size": args.batch_size, "side": args.side, "runs": runs,
              "peak_mb": {str(n): peak[n] for n in lengths}, f"peak_{last}_over_{second}": flat,
              f"peak_{second}_over_{first}": grown, "unbounded_over_first_peak": teeth,
              "second_minus_no_cache_peak_mb": cache_share,
              "goal": f"peak at {last} steps within 5 % of {second}; {second} within 10 % of {first}", "met": met,
              "machine": {"cpus": os.cpu_count(), "threads": 1}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    _table(runs)
    print(f"\n{last} / {second} steps peak: {flat:.3f} (goal <= 1.05); {second} / {first}: {grown:.3f} (goal <= 1.10): "
          f"{'met' if met else 'NOT met'}; unbounded / {first}: {teeth:.3f}; {second} - no-cache: {cache_share:+.0f} MB")
    print(f"wrote {args.out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
