#!/usr/bin/env bash
# Wheels for a GPU machine that cannot reach the package index (the lent H200 here): its image
# holds torch, transformers, accelerate, safetensors and tqdm but not diffusers. Run this where pip
# works, before the GPU session; benchmarks/gpu_check.sh installs what it finds in DIR first.
#
#     bash benchmarks/gpu_wheels.sh [DIR]        # default: .whl in the repository root (ignored by git)
#
# Takes the versions installed here (the ones the tests ran against), else the newest; never torch.
# Environment: GPU_WHEELS (the packages: "diffusers peft importlib_metadata"), GPU_PYTHON_VERSION
# (the GPU machine's Python: 3.12), PYTHON (the local one that reads the installed versions).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.whl}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
PACKAGES="${GPU_WHEELS:-diffusers peft importlib_metadata}"
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
mkdir -p "$DIR"

for name in $PACKAGES; do
    case "$name" in torch|torch==*) echo "gpu_wheels: never torch: the GPU machine's own build is kept" >&2; exit 2 ;; esac
    version="$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)"
    spec="$name${version:+==$version}"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
        --implementation cp "${PLATFORMS[@]/#/--platform=}" -d "$DIR" "$spec"
    echo "gpu_wheels: $spec"
done
echo "gpu_wheels: $(ls "$DIR"/*.whl | wc -l) wheels in $DIR ($(du -sh "$DIR" | cut -f1)); carry it to the GPU machine"
