#!/usr/bin/env bash
# The checks that need a CUDA device:
#   benchmarks/gpu_check.sh [LOG_DIR] [STEP ...]
# STEP is any of (default: all four, about 10 minutes on one H200; where one command may run at most
# 10 minutes, run "tests whole-linf" and "whole-l2 torchattacks" as two calls, about 5 minutes each):
#   tests        tests/test_gpu.py: every standard attack on CUDA against a linear model's exact minimal
#                perturbations, zoo evaluations on CUDA against the CPU's, analysis / channels_last /
#                compile on CUDA (116 s on an H200, 2026-11-30)
#   whole-linf   benchmarks/compare_whole_evaluation.py --device cuda, Linf: what users run, robench's
#                whole evaluate() against pyautoattack and torchattacks (about 145 s)
#   whole-l2     the same on the L2 board (about 180 s)
#   torchattacks benchmarks/compare_torchattacks.py --device cuda: robench's standard protocol against
#                torchattacks' AutoAttack (about 150 s)
# Needs torchattacks and pyautoattack installed. Each step has its own time limit, so one that hangs
# leaves the others their time. Uses the python3 on PATH with the repository root importable; logs go
# to LOG_DIR (default: gpu-logs), one file per step.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${1:-gpu-logs}
shift || true
steps=${*:-tests whole-linf whole-l2 torchattacks}
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
failed=""
for s in $steps; do
    case $s in
        tests) step test_gpu.log 200 python3 -m pytest -p no:cacheprovider -m gpu -q tests/test_gpu.py ;;
        whole-linf) step whole_linf_cuda.log 240 python3 benchmarks/compare_whole_evaluation.py --device cuda --n-examples 500 ;;
        whole-l2) step whole_l2_cuda.log 270 python3 benchmarks/compare_whole_evaluation.py --device cuda --n-examples 500 --threat-model L2 ;;
        torchattacks) step compare_torchattacks_cuda.log 240 python3 benchmarks/compare_torchattacks.py --device cuda --n-examples 500 ;;
        *) echo "unknown step '$s' (tests, whole-linf, whole-l2, torchattacks)"; false ;;
    esac || failed="$failed $s"
done
echo "steps failed or cut off:${failed:- none}"
[ -z "$failed" ]
