"""What the CPU heap tuning (hypernoise/allocator.py) buys: the same CLI runs with and without it.

    python benchmarks/cpu_allocator.py            # ~4 min on 2 idle cores; table + benchmarks/results/cpu_allocator.json
    python benchmarks/cpu_allocator.py --quick    # a smoke run (the tests use it)

Two workloads of the built-in world, each a fresh ``hypernoise`` process, run alternately with
``HYPERNOISE_MALLOC_TUNING=0`` (glibc's defaults) and without it (the CLI's tuning), ``--rounds``
times each, so both see the same machine:

- ``reno``: ``hypernoise evaluate --method reno --iters 10`` on 24 of the held-out prompts x 4 seeds
  (batch 16), timed by the command itself (``seconds_per_image``, which excludes start-up);
- ``train``: ``hypernoise train --steps 150 --init-trials 1`` with its closing evaluation on one
  seed, timed as the process's wall time.

Per run: wall seconds, user and system CPU seconds, minor page faults and the process's peak
resident memory (``wait4``'s rusage), and for ``reno`` the command's own ``seconds_per_image`` and
``peak_memory_mb``. The table gives the medians and the ratio tuned / untuned of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_allocator.json"
MODES = {"glibc defaults": {"HYPERNOISE_MALLOC_TUNING": "0"}, "tuned": {}}


def _prompts(path: Path, count: int) -> Path:
    from hypernoise.bench import BenchConfig

    prompts = BenchConfig().model.build().default_prompts("test")
    path.write_text("\n".join(prompts[:: max(1, len(prompts) // count)][:count]) + "\n")
    return path


def _commands(work: Path, quick: bool) -> dict:
    prompts = _prompts(work / "prompts.txt", 4 if quick else 24)
    seeds = "0" if quick else "0,1,2,3"
    iters, steps = ("2", "4") if quick else ("10", "150")
    return {
        "reno": ["evaluate", "--method", "reno", "--iters", iters, "--prompts", str(prompts), "--seeds", seeds,
                 "--batch-size", "16", "--threads", "2", "--no-progress"],
        "train": ["train", "--steps", steps, "--init-trials", "1", "--trial-steps", "2" if quick else "10",
                  "--eval-seeds", "1", "--threads", "2", "--no-progress"],
    }


def _run(args: list, out: Path, env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYPERNOISE_MALLOC_TUNING"}
    env.update(env_extra)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hypernoise", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"cpu_allocator: {' '.join(args[:1])} failed: {proc.stderr.read()[-2000:]}")
    record = {"wall_s": wall, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
              "minor_faults": usage.ru_minflt, "max_rss_mb": usage.ru_maxrss / 1024}
    results = out / "results.json"
    if results.exists():
        cost = json.loads(results.read_text())["cost"]
        record.update(seconds_per_image=cost["seconds_per_image"], peak_memory_mb=cost["peak_memory_mb"])
    return record


def measure(rounds: int, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        commands = _commands(work, quick)
        runs = {job: {mode: [] for mode in MODES} for job in commands}
        for r in range(rounds):
            for job, args in commands.items():
                for mode, env in MODES.items():
                    out = work / f"{job}-{r}-{mode.replace(' ', '_')}"
                    runs[job][mode].append(_run(args, out, env))
                    print(f"{job:>5} round {r + 1}/{rounds} {mode:>14}: {runs[job][mode][-1]['wall_s']:.1f} s",
                          flush=True)
    return {"rounds": rounds, "quick": quick, "commands": {j: " ".join(a) for j, a in commands.items()},
            "runs": runs, "summary": summarize(runs)}


def summarize(runs: dict) -> dict:
    """Per job and key: the median of each mode and tuned / untuned."""
    summary = {}
    for job, modes in runs.items():
        keys = [k for k in modes["tuned"][0] if all(k in rec for m in modes.values() for rec in m)]
        summary[job] = {}
        for key in keys:
            med = {mode: statistics.median(rec[key] for rec in recs) for mode, recs in modes.items()}
            base = med["glibc defaults"]
            summary[job][key] = {**med, "ratio": med["tuned"] / base if base else None}
    return summary


def table(summary: dict) -> str:
    lines = ["| job | measure | glibc defaults | tuned | tuned / defaults |", "|---|---|---|---|---|"]
    for job, keys in summary.items():
        for key, v in keys.items():
            ratio = "-" if v["ratio"] is None else f"{v['ratio']:.3f}"
            lines.append(f"| {job} | {key} | {v['glibc defaults']:.4g} | {v['tuned']:.4g} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each job in each mode")
    parser.add_argument("--quick", action="store_true", help="tiny runs (the tests' smoke path)")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON file (default {RESULTS})")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.quick)
    result["command"] = "python benchmarks/cpu_allocator.py" + (" --quick" if args.quick else "")
    result["date"] = time.strftime("%Y-%m-%d")
    out = args.out or (None if args.quick else RESULTS)
    print(table(result["summary"]))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
