"""KL(q || p0*) of the exact and the L2 objective on toy2d, over rewards and temperatures.

    python benchmarks/toy2d_objectives.py --out benchmarks/results/toy2d_objectives.json

Prints a table and writes JSON. The gap between the two objectives is what the paper's L2
approximation costs; it should shrink as alpha grows (mild tilt, small Lipschitz constant).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hypernoise.toy2d import Toy2DConfig, run_toy2d


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/toy2d_objectives.json")
    p.add_argument("--rewards", default="halfplane,corner,ring")
    p.add_argument("--alphas", default="1,2,4,8")
    p.add_argument("--steps", type=int, default=2000)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for reward in args.rewards.split(","):
        for alpha in map(float, args.alphas.split(",")):
            row = {"reward": reward, "alpha": alpha}
            for objective in ("exact", "l2"):
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    m = run_toy2d(Toy2DConfig(reward=reward, alpha=alpha, objective=objective, steps=args.steps,
                                              progress=False), tmp)
                row[objective] = {"kl": m["kl_to_tilted"], "mean_abs_error": m["mean_abs_error"],
                                  "lipschitz": m["lipschitz_max"], "seconds": time.perf_counter() - t0}
            row["gap"] = row["l2"]["kl"] - row["exact"]["kl"]
            rows.append(row)
            print(f"{reward:>9} alpha={alpha:<4g} KL exact {row['exact']['kl']:.4f}  KL l2 {row['l2']['kl']:.4f}  "
                  f"gap {row['gap']:.4f}  L(l2) {row['l2']['lipschitz']:.2f}  {row['exact']['seconds']:.0f}s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
