#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from the repository root (python3 with CUDA torch and Lightning):
#   bash bench/gpu_check.sh OUTDIR
# Writes amp.md (bench/amp.py), losses_cuda.txt (bench/losses.py), inference_cuda.txt (bench/inference.py)
# and demo_gpu.txt (`medfocal demo` trained with 16-mixed precision on the GPU) to OUTDIR.
# Where monai/nibabel/jsonargparse are missing, download their wheels into .whl/ first, e.g.
#   pip download --no-deps --only-binary=:all: -d .whl monai nibabel jsonargparse docstring_parser typeshed_client
# Results of one run: bench/results/gpu_h200.md.
set -uo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch, monai, pytorch_lightning as pl; print("torch", torch.__version__, "monai", monai.__version__, "lightning", pl.__version__)' | tee -a "$out/gpu.txt"
timeout 180 python3 bench/amp.py --device cuda --steps 40 2>&1 | tee "$out/amp.md"
timeout 90 python3 bench/losses.py --device cuda 2>&1 | tee "$out/losses_cuda.txt"
timeout 150 python3 -c 'import sys; from medfocal.demo import main; sys.exit(main())' --out /tmp/medfocal_demo --minutes 1.5 \
  -- --trainer.accelerator=gpu --trainer.precision=16-mixed 2>&1 | tee "$out/demo_gpu.txt"
timeout 90 python3 bench/inference.py --device cuda --n 8 --shape 128 128 80 --workers 4 --threads 0 2>&1 | tee "$out/inference_cuda.txt"
