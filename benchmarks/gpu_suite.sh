#!/usr/bin/env bash
# The GPU engine's checks and benchmarks, on the GPU machine:
#   NACRITH_MODEL=model.gguf benchmarks/gpu_suite.sh check OUT_DIR
#   NACRITH_MODEL=model.gguf benchmarks/gpu_suite.sh file OUT_DIR FILE [LANES] [GPUS] [CHUNK_TOKENS]
# check: the torch-engine tests on the GPU, then a lane-count sweep of the step.
# file: compress + decompress FILE through the API (round trip checked), timed.
set -u
what=$1; O=$2
export PYTHONUNBUFFERED=1
mkdir -p "$O"
if [ "$what" = check ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$O/gpu.txt"
  NACRITH_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -x -p no:cacheprovider \
      tests/test_torch_engine.py -k "not workers" 2>&1 | tail -15 | tee "$O/tests.txt"
  timeout 300 python3 benchmarks/gpu.py sweep --lanes 256,512,1024,2048 --context 512 --steps 128 \
      --out "$O/gpu" 2>&1 | tail -8
else
  timeout 560 python3 benchmarks/gpu.py file "$3" --lanes "${4:-2048}" --gpus "${5:-1}" --context 512 \
      --slide 128 --chunk-bytes 8192 --chunk-tokens "${6:-1344}" --out "$O/gpu-$(basename "$3")" 2>&1 | tail -40
fi
