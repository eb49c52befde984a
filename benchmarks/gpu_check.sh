#!/usr/bin/env bash
# The checks that need a CUDA device, in one run (under 9 minutes on one H200):
#   benchmarks/gpu_check.sh [LOG_DIR]
# 1. tests/test_gpu.py: every standard attack on CUDA against a linear model's exact minimal
#    perturbations, zoo evaluations on CUDA against the CPU's, analysis / channels_last / compile on CUDA;
# 2. benchmarks/compare_whole_evaluation.py --device cuda (Linf, then L2): what users run, robench's whole
#    evaluate() against pyautoattack and torchattacks on the GPU;
# 3. benchmarks/compare_torchattacks.py --device cuda: robench's standard protocol against
#    torchattacks' AutoAttack on the GPU.
# Needs torchattacks and pyautoattack installed. Each step has its own time limit, so one that hangs
# leaves the others their time. Uses the python3 on PATH with the repository root importable; logs go
# to LOG_DIR (default: gpu-logs), one file per step.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${1:-gpu-logs}
mkdir -p "$logs"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$logs/device.txt"
python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)" | tee -a "$logs/device.txt"
step() {  # step LOG SECONDS COMMAND...: run one check under its time limit, its output into LOG
    local log=$1 seconds=$2
    shift 2
    echo "== $* (limit ${seconds} s)"
    timeout -k 5 "$seconds" "$@" 2>&1 | tee "$logs/$log"
    local rc=${PIPESTATUS[0]}
    echo "== exit $rc"
    return "$rc"
}
step test_gpu.log 150 python3 -m pytest -p no:cacheprovider -m gpu -q tests/test_gpu.py; tests_rc=$?
step whole_linf_cuda.log 170 python3 benchmarks/compare_whole_evaluation.py --device cuda --n-examples 500; whole_rc=$?
step compare_torchattacks_cuda.log 110 python3 benchmarks/compare_torchattacks.py --device cuda --n-examples 500; compare_rc=$?
step whole_l2_cuda.log 100 python3 benchmarks/compare_whole_evaluation.py --device cuda --n-examples 500 --threat-model L2
l2_rc=$?
echo "test_gpu exit $tests_rc, whole Linf exit $whole_rc, compare_torchattacks exit $compare_rc, whole L2 exit $l2_rc"
exit $(( tests_rc || whole_rc || compare_rc || l2_rc ))
