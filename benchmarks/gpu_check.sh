#!/usr/bin/env bash
# The checks that need a CUDA device, in one run (about 5 minutes on one H200):
#   benchmarks/gpu_check.sh [LOG_DIR]
# 1. tests/test_gpu.py: every standard attack on CUDA against a linear model's exact minimal
#    perturbations, zoo evaluations on CUDA against the CPU's, analysis / channels_last / compile on CUDA;
# 2. benchmarks/compare_torchattacks.py --device cuda: robench's standard protocol against
#    torchattacks' AutoAttack on the GPU (needs torchattacks installed).
# Uses the python3 on PATH with the repository root importable; logs go to LOG_DIR (default: gpu-logs).
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${1:-gpu-logs}
mkdir -p "$logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$logs/device.txt"
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)" | tee -a "$logs/device.txt"
timeout 300 python3 -m pytest -p no:cacheprovider -m gpu -q tests/test_gpu.py 2>&1 | tee "$logs/test_gpu.log"
tests_rc=${PIPESTATUS[0]}
timeout 300 python3 benchmarks/compare_torchattacks.py --device cuda --n-examples 500 2>&1 | tee "$logs/compare_torchattacks_cuda.log"
compare_rc=${PIPESTATUS[0]}
echo "test_gpu exit $tests_rc, compare_torchattacks exit $compare_rc"
exit $(( tests_rc || compare_rc ))
