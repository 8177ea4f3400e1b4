#!/usr/bin/env bash
# The GPU engine's checks and benchmarks in one go, on the GPU machine:
#   NACRITH_MODEL=path/to/model.gguf benchmarks/gpu_suite.sh CORPUS_DIR OUT_DIR [LANES]
# CORPUS_DIR must hold dickens. Writes logs, Markdown and JSON to OUT_DIR.
set -u
C=$1; O=$2; LANES=${3:-1250}
export PYTHONUNBUFFERED=1
mkdir -p "$O"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$O/gpu.txt"
NACRITH_TEST_DEVICE=cuda timeout 300 python3 -m pytest -q -x -p no:cacheprovider \
    tests/test_torch_engine.py -k "not workers" 2>&1 | tail -5 | tee "$O/tests.txt"
timeout 240 python3 benchmarks/gpu.py sweep --lanes 256,512,1024,2048 --context 512 --steps 128 \
    --out "$O/gpu" 2>&1 | tail -8
timeout 400 python3 benchmarks/gpu.py file "$C/dickens" --lanes "$LANES" --context 512 --slide 128 \
    --chunk-bytes 8192 --out "$O/gpu-dickens" 2>&1 | tail -5
