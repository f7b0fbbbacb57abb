#!/usr/bin/env bash
# The GPU path, end to end, on a CUDA machine: the GPU tests, a switch's cost, then the demo.
# Usage (device tool): bash benchmarks/gpu_check.sh
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python -m pytest -q -rA -s -m gpu tests/ 2>&1 | tail -30  # test_gpu*.py: layouts, memory, fp8, switching
python benchmarks/switch_cost.py --device cuda --widths 512,1024 --repeats 2 2>&1 | tail -5
python -m parakit demo --runs-dir "${OUT:-/tmp}/runs" --report "${OUT:-/tmp}/demo-report.html" 2>&1 | tail -20
