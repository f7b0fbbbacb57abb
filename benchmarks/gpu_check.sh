#!/usr/bin/env bash
# The GPU path, end to end, on a CUDA machine: the GPU tests, then the demo.
# Usage (device tool): bash benchmarks/gpu_check.sh
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python -m pytest -q -rA tests/test_gpu.py tests/test_placement.py 2>&1 | tail -15
python -m parakit demo --runs-dir "${OUT:-/tmp}/runs" --report "${OUT:-/tmp}/demo-report.html" 2>&1 | tail -20
