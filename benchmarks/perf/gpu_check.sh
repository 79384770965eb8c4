#!/usr/bin/env bash
# The paper-scale benchmarks on one CUDA GPU (issue 12; an H100 or H200): BLIP-2 with EVA ViT-g, the
# Q-Former and OPT-2.7B, random weights, batch 64, bf16; vlreg against transformers' BLIP-2 for the
# stage-2 step (packing on and off), greedy and 5-beam captioning, and vlreg's stage-1 step, with MFU
# against the bf16 matmul peak of the same run. Every row is printed as it is measured, then the table.
# Expected to take about 3 minutes on an H200 (model builds included; not yet run there); the benchmark
# stops itself after 8 minutes, keeping the rows measured by then.
#
# 1. On a machine with the package index and the synthetic world (any CPU machine of this project):
#        bash benchmarks/perf/gpu_check.sh --prepare
#    writes what a GPU machine lacks into folders git ignores: outputs/perf/text (captions and
#    tokenizers, made from the synthetic world, whose clips the GPU image cannot encode) and
#    outputs/perf/wheels (omegaconf, which the GPU image does not have).
# 2. On the GPU machine (the device tool: run with carry ["outputs/perf/text", "outputs/perf/wheels"]
#    and timeout_s 600):
#        bash benchmarks/perf/gpu_check.sh
#    Results: $OUT/results_cuda.{json,txt} where $OUT is set (the device tool), else
#    benchmarks/perf/results_cuda.{json,txt}; both name the GPU, the host CPU and the versions.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"

if [[ "${1:-}" == "--prepare" ]]; then
    "$PYTHON" - <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, ".")
from vlreg.data.world import make_world  # noqa: E402
from benchmarks.perf.texts import texts  # noqa: E402

work = Path("outputs/perf")
made = texts(work, lambda: make_world(work / "world_small_224", "small", 0, image_size=224))
print(f"{len(made.captions)} captions and tokenizers in {work / 'text'}")
EOF
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        -d outputs/perf/wheels omegaconf==2.4.0
    ls outputs/perf/wheels
    exit 0
fi

if [[ ! -f outputs/perf/text/captions.json ]]; then
    echo "outputs/perf/text is missing: run 'bash benchmarks/perf/gpu_check.sh --prepare' where a world can be made," \
         "and carry outputs/perf/text" >&2
    exit 2
fi
if compgen -G "outputs/perf/wheels/*.whl" >/dev/null && ! "$PYTHON" -c "import omegaconf" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        outputs/perf/wheels/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
out="${OUT:-benchmarks/perf}"
timeout 480 "$PYTHON" -m benchmarks.perf --device cuda --scale paper --out "$out/results_cuda.json"
