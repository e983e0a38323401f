#!/usr/bin/env bash
# The real-size check on one GPU, one command, under 8 minutes on an H100 / H200:
#
#     bash benchmarks/gpu_check.sh
#
# Installs what is missing (never another torch: the installed one is pinned by a constraint; on a
# machine without the package index, from the wheels that benchmarks/gpu_wheels.sh fetched into .whl),
# then runs benchmarks/realsize.py's GPU plan in bf16 on CUDA with random weights built from the
# published configs (nothing is downloaded): SANA-Sprint 0.6B at 1024 px, SD-Turbo at 512 px and
# FLUX-Schnell's transformer at 512 px, each with the full ReNO reward ensemble at real widths:
# training step time and peak memory (gradient checkpointing on and off), the largest batch
# that fits, generation base vs HyperNoise (LoRA rank 128 and 8, merged), the ensemble alone.
# Every job runs in its own process with a time bound; the run stops starting jobs in time.
#
# Then GenEval's detector and colour classifier at their real sizes (benchmarks/geneval_speed.py): images per second;
# and whether a pipeline attached on the CPU follows pipe.to("cuda") (benchmarks/attach_device.py).
#
# Writes realsize_gpu.json, realsize_gpu.md, geneval_gpu.json, geneval_gpu.md and attach_device.json to $OUT (default benchmarks/results/gpu_check).
# HYPERNOISE_GPU_CHECK_CPU=1 runs the same plan on the CPU with tiny models (the test path).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${OUT:-$ROOT/benchmarks/results/gpu_check}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then  # the interpreter that holds torch (on the lent H200: python3)
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
            PY="$(command -v "$candidate")"; break
        fi
    done
    PY="${PY:-python3}"
fi
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # absolute: steps below cd
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"  # seconds for everything, install included
mkdir -p "$OUT_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1

# 1. torch is the machine's own: refuse to go on without it, never replace it
if ! TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
    echo "gpu_check: $PY cannot import torch; install the machine's CUDA build of torch first" >&2
    exit 2
fi

# 2. carried wheels first (a machine without the package index: benchmarks/gpu_wheels.sh makes them
#    where pip works), into a folder of their own put before everything else on the path; never torch
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    if compgen -G "$WHEELS/torch-*.whl" >/dev/null; then
        echo "gpu_check: $WHEELS holds a torch wheel; remove it: the machine's own CUDA build of torch is kept" >&2
        exit 2
    fi
    site="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site:$PYTHONPATH"
    echo "gpu_check: installed the carried wheels of $WHEELS into $site: $(cd "$WHEELS" && ls *.whl | sed 's/-[0-9].*//' | tr '\n' ' ')"
fi

# 3. the rest, only what is missing, with torch pinned to the installed version
missing="$(cd /tmp && "$PY" - <<'EOF'
import importlib.util
wanted = ["hypernoise", "diffusers", "transformers", "peft", "accelerate", "safetensors", "tqdm"]
print(" ".join(m for m in wanted if importlib.util.find_spec(m) is None))
EOF
)"
if [ -n "$missing" ]; then
    echo "gpu_check: installing what is missing ($missing), torch kept at $TORCH_VERSION"
    constraints="$(mktemp)"
    echo "torch==$TORCH_VERSION" > "$constraints"
    if ! "$PY" -m pip install --quiet -c "$constraints" -e "$ROOT[diffusers]"; then
        echo "gpu_check: could not install $missing (no package index here?); run 'bash benchmarks/gpu_wheels.sh' where pip works and bring its .whl folder" >&2
        exit 2
    fi
    rm -f "$constraints"
fi

# 4. the measurements
if [ "${HYPERNOISE_GPU_CHECK_CPU:-0}" = "1" ]; then
    device=(--device cpu --plan gpu --quick)
else
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "gpu_check: torch $TORCH_VERSION sees no CUDA device (HYPERNOISE_GPU_CHECK_CPU=1 runs the CPU path)" >&2
        exit 2
    fi
    device=(--device cuda --plan gpu)
    "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
fi
GENEVAL_S="${GPU_CHECK_GENEVAL_S:-100}"  # kept for step 5
ATTACH_S="${GPU_CHECK_ATTACH_S:-60}"  # kept for step 6
left=$(( BUDGET_S - SECONDS - GENEVAL_S - ATTACH_S ))
"$PY" "$ROOT/benchmarks/realsize.py" "${device[@]}" --dtype bf16 --deadline-s "$left" \
    --out "$OUT_DIR/realsize_gpu.json" --table "$OUT_DIR/realsize_gpu.md"
# 5. GenEval: the detector (Swin-S Mask2Former at 800 px) and the CLIP colour classifier, images per second
if [ "${HYPERNOISE_GPU_CHECK_CPU:-0}" = "1" ]; then geneval=(--device cpu --quick --rounds 1); else geneval=(--device cuda); fi
if [ $(( BUDGET_S - SECONDS )) -gt 30 ]; then
    timeout $(( BUDGET_S - SECONDS )) "$PY" "$ROOT/benchmarks/geneval_speed.py" "${geneval[@]}" \
        --out "$OUT_DIR/geneval_gpu.json" > "$OUT_DIR/geneval_gpu.md" || echo "gpu_check: the GenEval line did not finish" >&2
    cat "$OUT_DIR/geneval_gpu.md"
else
    echo "gpu_check: no time left for the GenEval line" >&2
fi
# 6. an attached pipeline follows pipe.to(device): attached on the CPU, moved, equal to HyperNoise built on the device
if [ "${HYPERNOISE_GPU_CHECK_CPU:-0}" = "1" ]; then attach=(--device cpu); else attach=(--device cuda); fi
if [ $(( BUDGET_S - SECONDS )) -gt 15 ]; then
    timeout $(( BUDGET_S - SECONDS )) "$PY" "$ROOT/benchmarks/attach_device.py" "${attach[@]}" \
        --out "$OUT_DIR/attach_device.json" 2>/dev/null > "$OUT_DIR/attach_device.md" \
        || echo "gpu_check: the attach line failed or did not finish (see attach_device.md)" >&2
    cat "$OUT_DIR/attach_device.md"
else
    echo "gpu_check: no time left for the attach line" >&2
fi
echo "gpu_check: done in ${SECONDS} s; $OUT_DIR/realsize_gpu.json, realsize_gpu.md, geneval_gpu.json, geneval_gpu.md and attach_device.json"
