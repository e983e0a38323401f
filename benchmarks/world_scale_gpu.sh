#!/usr/bin/env bash
# Does training scale, not the method, limit the share of ReNO's gain that HyperNoise recovers on
# the shapes world? (issue 21, item 5)
#
# Trains the world's hypernetwork 100x longer than the main job (80k steps instead of 800) at a
# larger LoRA rank (32 instead of 8), everything else the world's preset (alpha 1.0, 3
# initialisation trials, AdamW 3e-4, batch 64, the category-balanced train prompts), on a GPU in
# about 8 minutes; evaluates it on the bench's images (the 120 balanced test entries x seeds 0-7,
# 960 images: the closing before/after of `hypernoise train`, plus 2 passes with `evaluate`) and
# writes OUT/world_scale.json with the numbers and the share of the bench's ReNO gain.
#
#   benchmarks/world_scale_gpu.sh [OUT]                          # on the GPU machine
#   STEPS=3 DEVICE=cpu CALIBRATE=0 EVAL_SEEDS=1 benchmarks/world_scale_gpu.sh /tmp/ws   # CPU check
#
# Environment: STEPS (80000), RANK (32), DEVICE (cuda), EVAL_SEEDS (8: seeds 0..7), BUDGET_S (480:
# the training time to fit), CALIBRATE (1: time CAL_STEPS = 200 steps first and, where STEPS would
# not fit BUDGET_S, train the steps that do, recorded as `steps` beside `steps_asked`), PYTHON (python3, else python),
# REFERENCE (the bench results whose ReNO gain is the yardstick: benchmarks/results/world_frontier.json,
# else world_bench.json).
set -euo pipefail

OUT=${1:-runs/world-scale}
STEPS=${STEPS:-80000}
RANK=${RANK:-32}
DEVICE=${DEVICE:-cuda}
EVAL_SEEDS=${EVAL_SEEDS:-8}
BUDGET_S=${BUDGET_S:-480}
CALIBRATE=${CALIBRATE:-1}
CAL_STEPS=${CAL_STEPS:-200}
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
HERE=$(cd "$(dirname "$0")" && pwd)
REFERENCE=${REFERENCE:-}
if [ -z "$REFERENCE" ]; then
  REFERENCE=$HERE/results/world_frontier.json
  [ -f "$REFERENCE" ] || REFERENCE=$HERE/results/world_bench.json
fi
HN=("$PYTHON" -m hypernoise.cli.main)
COMMON=(--generator shapes --device "$DEVICE" --no-progress)
mkdir -p "$OUT"

steps=$STEPS
if [ "$CALIBRATE" = 1 ]; then
  # CAL_STEPS steps, one trial, a small evaluation: seconds per step on this device, startup excluded
  "${HN[@]}" train "${COMMON[@]}" --rank "$RANK" --steps "$CAL_STEPS" --init-trials 1 --eval-seeds 1 \
    --checkpoint-every 100000 --overwrite --out "$OUT/calibrate" | tee "$OUT/calibrate.log"
  steps=$("$PYTHON" - "$OUT/calibrate.log" "$STEPS" "$BUDGET_S" <<'EOF'
import re, sys
log, asked, budget = open(sys.argv[1]).read(), int(sys.argv[2]), float(sys.argv[3])
n, seconds = re.search(r"trained (\d+) steps .*? in ([\d.]+) s", log).groups()
per_step = float(seconds) / int(n)
trials = 3 * 100  # the preset's initialisation trials
fit = int(budget / per_step) - trials
print(asked if asked <= fit else max(100, fit // 100 * 100))
print(f"calibration: {per_step * 1000:.2f} ms/step; {asked} steps would take {asked * per_step:.0f} s", file=sys.stderr)
EOF
)
  [ "$steps" = "$STEPS" ] || echo "training $steps steps instead of $STEPS to fit ${BUDGET_S} s" >&2
fi

start=$(date +%s)
"${HN[@]}" train "${COMMON[@]}" --rank "$RANK" --steps "$steps" --eval-seeds "$EVAL_SEEDS" \
  --checkpoint-every 10000 --checkpoints-total-limit 1 --overwrite --out "$OUT/train" | tee "$OUT/train.log"
train_s=$(( $(date +%s) - start ))

seeds=$("$PYTHON" -c "print(','.join(map(str, range($EVAL_SEEDS))))")
"${HN[@]}" evaluate "${COMMON[@]}" --method hypernoise --adapter "$OUT/train/adapter" --hypernet-passes 2 \
  --seeds "$seeds" --batch-size 64 --overwrite --out "$OUT/eval-2passes" > "$OUT/eval-2passes.log"

"$PYTHON" - "$OUT" "$STEPS" "$steps" "$RANK" "$DEVICE" "$train_s" "$REFERENCE" <<'EOF'
import json, re, sys
from pathlib import Path

out, asked, steps, rank, device, train_s, reference = sys.argv[1:]
out = Path(out)
ba = json.loads((out / "train" / "before_after.json").read_text())
two = json.loads((out / "eval-2passes" / "results.json").read_text())
ref = json.loads(Path(reference).read_text())
reno = ref["methods"]["reno"]["geneval"]["overall"]
ref_base, ref_hn = ref["methods"]["base"]["geneval"]["overall"], ref["methods"]["hypernoise"]["geneval"]["overall"]
base = ba["base"]["geneval"]["overall"]
log = (out / "train.log").read_text()
trained = re.search(r"trained (\d+) steps .*? in ([\d.]+) s", log)


def row(res):
    return {"geneval": res["geneval"], "fidelity": res.get("fidelity"), "reward": sum(res["rewards"].values()),
            "share_of_reno_gain": (res["geneval"]["overall"] - base) / (reno - ref_base) if reno != ref_base else None}


result = {"device": device, "steps_asked": int(asked), "steps": int(steps), "rank": int(rank),
          "train_seconds_total": int(train_s), "train_loop_seconds": float(trained.group(2)) if trained else None,
          "images": ba["base"]["n_images"], "seeds": ba["base"]["seeds"],
          "base": row(ba["base"]), "hypernoise_1pass": row(ba["hypernoise"]), "hypernoise_2passes": row(two),
          "reference": {"file": str(reference), "base": ref_base, "hypernoise_800_steps_rank_8": ref_hn,
                        "reno": reno, "share_of_reno_gain": (ref_hn - ref_base) / (reno - ref_base)}}
(out / "world_scale.json").write_text(json.dumps(result, indent=1) + "\n")
print(f"{steps} steps at rank {rank} on {device} ({train_s} s with evaluation); {result['images']} images")
for name in ("base", "hypernoise_1pass", "hypernoise_2passes"):
    r = result[name]
    share = "" if name == "base" else f"  {r['share_of_reno_gain']:.0%} of ReNO's gain"
    print(f"{name:>20}: GenEval {r['geneval']['overall']:.3f}  fidelity {r['fidelity']:.3f}{share}")
print(f"{'800 steps, rank 8':>20}: {ref_hn:.3f}  {result['reference']['share_of_reno_gain']:.0%} of ReNO's gain "
      f"({ref_base:.3f} -> ReNO {reno:.3f}, {reference})")
print(f"wrote {out / 'world_scale.json'}")
EOF
