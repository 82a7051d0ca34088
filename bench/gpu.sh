#!/usr/bin/env bash
# The KD cost benchmark on one CUDA GPU: an ELECTRA-base-sized student and ELECTRA-large-sized teachers
# in bf16, (a) no KD, (b) offline KD from stores, (c) online KD with resident teachers, M = 1 and 3,
# (a) and (b) step by step in one process, the KD loss alone, and the precompute's throughput
# against a bare forward. Writes docs/bench_gpu.md (capped at 10 minutes). Then items 1 and 2 of
# `make bench-peer` at the same sizes: road_ds's training step against the Hugging Face Trainer on
# DeepSpeed ZeRO-2, and offline KD from 1 and 3 stores against the Trainer subclass with resident
# teachers, in bf16; writes docs/bench_gpu_peer.md and .json (capped at 8 minutes).
#
#   bash bench/gpu.sh            # needs the data kit under $ROAD_DS_CACHE (default ~/.cache/road_ds)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/gpu.sh: no CUDA GPU here (nvidia-smi finds none); on CPU run: make bench" >&2
    exit 1
fi
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || make venv
nvidia-smi -L
timeout 600 "$PY" bench/kd_bench.py --student electra-base --teacher electra-large \
    --micro-batch 32 --rows 2000 --warmup 5 --steps 20 --rounds 2 --paired-steps 30 --out "${OUT:-docs/bench_gpu.md}"
"$PY" -c "import accelerate" 2>/dev/null || "$PY" -m pip install -q -e '.[bench]'
timeout 480 "$PY" bench/peer_bench.py --skip-qa --out "${PEER_OUT:-docs/bench_gpu_peer.md}" --train-args \
    "--student electra-base --teacher electra-large --parts train distill --ranks 1 --micro-batch 16 --accum 2 --train-rows 2000"
