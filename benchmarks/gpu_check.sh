#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one script for a machine that has one (issue 8): the
# CUDA tests (end-to-end `lcbench run --device cuda` included), learned-codec throughput and
# metric speed on the GPU, and CPU-vs-CUDA decode identity. Run from the repository root with
# the project installed (`.ci/run`'s installs); each step's output goes to ${OUT:-gpu-check}/,
# and each step has its own time limit, so one that hangs still leaves the others' results.
#   KODAK=DIR            Kodak PNGs (default ../shared/datasets/kodak; a folder named 'kodak' must hold all
#                        24, as it is checked against the manifest: name a subset's folder otherwise)
#   STEP_TIMEOUT=SECONDS per step (default 240)
set -u
out="${OUT:-gpu-check}"
kodak="${KODAK:-../shared/datasets/kodak}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } \
    > "$out/env.txt" 2>&1
tail -n 3 "$out/env.txt"

step() {
    local name=$1 start rc
    shift
    start=$(date +%s)
    timeout "${STEP_TIMEOUT:-240}" "$@" > "$out/$name.txt" 2>&1
    rc=$?
    echo "== $name: rc=$rc, $(( $(date +%s) - start )) s"
    tail -n "${TAIL:-14}" "$out/$name.txt"
}

step pytest_cuda python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_run.py tests/test_torch_metrics.py \
    tests/test_learned_batching.py
step learned_throughput_cuda python3 benchmarks/learned_throughput.py --device cuda --kodak "$kodak" \
    --max-images 8 --batch-sizes 1,4 --json "$out/learned_throughput_cuda.json"
step cpu_cuda_identity python3 benchmarks/cpu_cuda_identity.py --kodak "$kodak" --max-images 4
step metrics_cuda python3 benchmarks/learned_throughput.py --metrics --device cuda --kodak "$kodak" --max-images 8
# a user's whole run on CUDA, wall time against the codecs' own times in results.csv (57-64 s vs ~23 s on
# an H200 on 2026-11-29, before the timing and sr_metrics changes of that day)
step e2e_kodak_cuda python3 -m lcbench run --codecs importance_map,autoencoder,comcnn+jpeg --dataset "$kodak" \
    --device cuda --out "$out/e2e_run" --no-progress --no-cache
[ -f "$out/e2e_run/results.csv" ] && python3 -c "import pandas as pd; d = pd.read_csv('$out/e2e_run/results.csv'); print('codec time (enc+dec) s:', round((d.enc_time_s + d.dec_time_s).sum(), 1))" \
    | tee -a "$out/e2e_kodak_cuda.txt"
rm -rf "$out/e2e_run"  # only the text comes back

