#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one script for a machine that has one (issue 8):
# the CUDA tests, learned-codec throughput and metric speed on the GPU, and CPU-vs-CUDA
# decode identity. Run from the repository root after `.ci/run`'s installs (or with the
# project installed); writes its outputs to ${OUT:-gpu-check}/.
set -u
out="${OUT:-gpu-check}"
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python -m pytest -q -rs tests/test_torch_metrics.py 2>&1 | tee "$out/pytest_torch_metrics.txt" | tail -5
python benchmarks/cpu_cuda_identity.py --max-images 4 2>&1 | tee "$out/cpu_cuda_identity.txt" | tail -8
python benchmarks/learned_throughput.py --device cuda --max-images 8 --batch-sizes 1,4 \
    --json "$out/learned_throughput_cuda.json" 2>&1 | tee "$out/learned_throughput_cuda.txt" | tail -25
python benchmarks/learned_throughput.py --metrics --device cuda --max-images 8 2>&1 \
    | tee "$out/metrics_cuda.txt" | tail -8
