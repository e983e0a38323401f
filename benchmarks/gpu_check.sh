#!/usr/bin/env bash
# The real-size check on one GPU, one command, under 8 minutes on an H100 / H200:
#
#     bash benchmarks/gpu_check.sh
#
# Installs what is missing (never another torch: the installed one is pinned by a constraint),
# then runs benchmarks/realsize.py's GPU plan in bf16 on CUDA with random weights built from the
# published configs (nothing is downloaded): SANA-Sprint 0.6B at 1024 px, SD-Turbo at 512 px and
# FLUX-Schnell's transformer at 512 px, each with the full ReNO reward ensemble at real widths:
# training step time and peak memory (gradient checkpointing on and off), the largest batch
# that fits, generation base vs HyperNoise (LoRA rank 128 and 8, merged), the ensemble alone.
# Every job runs in its own process with a time bound; the run stops starting jobs in time.
#
# Writes realsize_gpu.json and realsize_gpu.md to $OUT (default benchmarks/results/gpu_check).
# HYPERNOISE_GPU_CHECK_CPU=1 runs the same plan on the CPU with tiny models (the test path).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${OUT:-$ROOT/benchmarks/results/gpu_check}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-450}"  # seconds for everything, install included
mkdir -p "$OUT_DIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1

# 1. torch is the machine's own: refuse to go on without it, never replace it
if ! TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then
    echo "gpu_check: $PY cannot import torch; install the machine's CUDA build of torch first" >&2
    exit 2
fi

# 2. the rest, only what is missing, with torch pinned to the installed version
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
    "$PY" -m pip install --quiet -c "$constraints" -e "$ROOT[diffusers]"
    rm -f "$constraints"
fi

# 3. the measurements
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
left=$(( BUDGET_S - SECONDS ))
"$PY" "$ROOT/benchmarks/realsize.py" "${device[@]}" --dtype bf16 --deadline-s "$left" \
    --out "$OUT_DIR/realsize_gpu.json" --table "$OUT_DIR/realsize_gpu.md"
echo "gpu_check: done in ${SECONDS} s; $OUT_DIR/realsize_gpu.json and realsize_gpu.md"
