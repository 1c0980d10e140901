#!/usr/bin/env bash
# GPU checks, run on a CUDA machine from the repository root (python3 with CUDA torch and Lightning):
#   bash bench/gpu_check.sh OUTDIR          # issue 19's GPU goals (2: loss, 5: inference), about 6 minutes
#   bash bench/gpu_check.sh OUTDIR all      # also mixed precision (bench/amp.py) and the demo on the GPU
# Writes to OUTDIR: gpu.txt (versions), test_gpu.txt (the CUDA tests: inversion on the GPU equals the
# CPU's), losses_cuda.txt (bench/losses.py, eager GPU path, every pair and size), losses_compiled.txt
# (DiceFocalLoss with the kernels compiled for the GPU too: MEDFOCAL_COMPILED_LOSS_DEVICES=cpu,cuda),
# inference_cuda.txt (bench/inference.py at the goal's 32 volumes); with "all" also amp.md, demo_gpu.txt.
# Where monai/nibabel/jsonargparse/pytest are missing, download their wheels into .whl/ first, e.g.
#   pip download --no-deps --only-binary=:all: -d .whl monai nibabel jsonargparse docstring_parser \
#     typeshed_client pytest pluggy iniconfig
# and carry .whl. Results of earlier runs: bench/results/gpu_h200.md.
set -uo pipefail
out=${1:-gpu_check}
what=${2:-goals}
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
nproc | sed 's/^/cpu cores: /' | tee -a "$out/gpu.txt"
if python3 -c 'import pytest' 2>/dev/null; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider -rs tests/inference/test_writers.py 2>&1 | tee "$out/test_gpu.txt"
else
  echo "pytest missing: add its wheels to .whl (see the top of this script)" | tee "$out/test_gpu.txt"
fi
# goal 2: never slower than MONAI at any size, >= 2x and <= 0.5x memory at (2, 4, 192^3)
timeout 120 python3 bench/losses.py --device cuda 2>&1 | tee "$out/losses_cuda.txt"
timeout 150 python3 bench/losses.py --device cuda --only dice_focal --compiled-devices cpu,cuda 2>&1 \
  | tee "$out/losses_compiled.txt"
# goal 5: pipeline <= 1.1x pure compute with 32 volumes (writer threads: the default for a GPU)
timeout 200 python3 bench/inference.py --device cuda --n 32 --shape 128 128 80 --workers 6 --threads 0 2>&1 \
  | tee "$out/inference_cuda.txt"
if [ "$what" = all ]; then
  timeout 180 python3 bench/amp.py --device cuda --steps 40 2>&1 | tee "$out/amp.md"
  timeout 150 python3 -c 'import sys; from medfocal.demo import main; sys.exit(main())' --out /tmp/medfocal_demo \
    -- --trainer.accelerator=gpu --trainer.precision=16-mixed 2>&1 | tee "$out/demo_gpu.txt"
fi
