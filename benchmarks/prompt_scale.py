"""Memory at the paper's prompt scale: training over 100k distinct prompts with a bounded cache.

    python benchmarks/prompt_scale.py            # ~3 min on 2 cores; table + benchmarks/results/prompt_scale.json
    python benchmarks/prompt_scale.py --quick    # a smoke run (the tests use it)

Trains the tiny SANA-Sprint pipeline (random weights, built from configs: hypernoise.generators.tiny;
Gemma-2 embeddings of 300 tokens, as the real model's) on a file of N distinct prompts, each run in a
fresh process, three runs:

- ``short``:  S steps with ``--prompt-cache-mb LIMIT``;
- ``long``:   10 x S steps with the same limit (10x the distinct prompts seen);
- ``unbounded``: the long run with a cache larger than every prompt it sees (the check's teeth: this
  is what memory does when the cache is not bounded);
- ``no-cache``: the long run with no cache (``--prompt-cache-mb 0``): what encoding 10x more new
  prompts costs by itself (the tokenizer's and the allocator's own growth), to tell it from the
  cache's.

Each process records its resident memory (``/proc/self/statm``) after every training step; a run's
peak is the largest of those (start-up and the closing report are not training), reported with the
peak of each half of the run and the process's own peak (``ru_maxrss``). Goal (issue 22): the long run's peak within
10 % of the short run's, and no growth from its first half to its second. The unbounded run shows
the same measurement moving.
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


def run(folder: Path, prompts: Path, out: Path, steps: int, batch: int, cache_mb: float) -> dict:
    argv = ["train", "--generator", "auto", "--pretrained", str(folder), "--device", "cpu", "--reward", "redness",
            "--prompts", str(prompts), "--steps", str(steps), "--batch-size", str(batch), "--rank", "2",
            "--prompt-cache-mb", str(cache_mb), "--checkpoint-every", str(steps), "--eval-seeds", "1",
            "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv)], capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=100_000, help="distinct prompts in the file (default 100k)")
    p.add_argument("--steps", type=int, default=40, help="steps of the short run; the long runs take 10x")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per step")
    p.add_argument("--cache-mb", type=float, default=16, help="the bound under test (default 16 MB)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2k prompts, 4 and 40 steps of 8")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.steps, args.batch_size = 2_000, 4, 8
    from hypernoise.generators.tiny import save_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = save_tiny_pipeline("sana-sprint", tmp / "sana", seed=0)
        prompts = tmp / "prompts.txt"
        write_prompts(prompts, args.prompts)
        long_steps = 10 * args.steps
        runs = {}
        for name, steps, cache in (("short", args.steps, args.cache_mb), ("long", long_steps, args.cache_mb),
                                   ("unbounded", long_steps, 1e6), ("no-cache", long_steps, 0)):
            t = time.perf_counter()
            measured = run(folder, prompts, tmp / name, steps, args.batch_size, cache)
            rss, half = measured.pop("rss_mb"), steps // 2
            runs[name] = {"steps": steps, "prompt_cache_mb": cache,
                          "distinct_prompts_seen": min(args.prompts, steps * args.batch_size), **measured,
                          "peak_mb": max(rss), "first_half_mb": max(rss[:half]), "second_half_mb": max(rss[half:]),
                          "rss_mb_every_step": [round(r, 1) for r in rss[:: max(1, steps // 40)]]}
            print(f"{name:>9}: {steps} steps, peak {runs[name]['peak_mb']:.0f} MB "
                  f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    ratio = runs["long"]["peak_mb"] / runs["short"]["peak_mb"]
    growth = runs["long"]["second_half_mb"] / runs["long"]["first_half_mb"]
    teeth = runs["unbounded"]["peak_mb"] / runs["short"]["peak_mb"]
    cache_share = runs["long"]["peak_mb"] - runs["no-cache"]["peak_mb"]
    result = {"prompts_in_file": args.prompts, "batch_size": args.batch_size, "runs": runs,
              "long_over_short_peak": ratio, "long_second_over_first_half": growth,
              "unbounded_over_short_peak": teeth, "long_minus_no_cache_peak_mb": cache_share, "goal": "long_over_short_peak <= 1.10", "met": ratio <= 1.10,
              "machine": {"cpus": os.cpu_count(), "threads": 1}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| run | steps | distinct prompts seen | cache bound (MB) | peak RSS in training (MB) | 1st half | 2nd half | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        mb = r["prompt_cache_mb"]
        bound = "unbounded" if mb >= 1e6 else "0 (off)" if mb == 0 else f"{mb:g}"
        print(f"| {name} | {r['steps']} | {r['distinct_prompts_seen']} | {bound} | {r['peak_mb']:.0f} | "
              f"{r['first_half_mb']:.0f} | {r['second_half_mb']:.0f} | {r['seconds']:.0f} |")
    print(f"\nlong / short peak: {ratio:.3f} (goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'}); "
          f"long run 2nd / 1st half: {growth:.3f}; unbounded / short: {teeth:.3f}; long - no-cache: "
          f"{cache_share:+.0f} MB")
    print(f"wrote {args.out}")
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
