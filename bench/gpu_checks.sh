#!/usr/bin/env bash
# The checks only a GPU can run, as one script (a CUDA machine with torch, plus the pack's requirements and the
# diffusers extra; PyAV is not needed):
#   1. tests/test_other_device.py against CUDA (BGFS_TEST_DEVICE=cuda): the fixer, training, generation, the nodes'
#      fixes and `bgfs fix` with the computation on the GPU, compared with the same runs on the CPU;
#   2. bench_latent_fix.py: a whole Latent Anatomy Fixer run at 81 frames 832x480 through the full-size Wan 2.1 VAE
#      (random weights), gradients through bf16 and fp32 side by side;
#   3. bench_fixer_step.py: one step, windowed against full frame, fp32 and bf16.
# Each part has its own time limit, so a slow one leaves the others their time. Logs: $OUT (default
# outputs/gpu_checks).
#
#   bash bench/gpu_checks.sh [STEPS]        # STEPS: the Latent Fixer run's steps (default 10; the node's is 30)
set -u
OUT=${OUT:-outputs/gpu_checks}
STEPS=${1:-10}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import sys, torch, numpy, diffusers, mediapipe; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'diffusers', diffusers.__version__, 'mediapipe',
mediapipe.__version__)"
} 2>&1 | tee "$OUT/env.txt"
BGFS_TEST_DEVICE=cuda timeout 120 $PY -m pytest -q -p no:cacheprovider -rs --durations=5 tests/test_other_device.py \
  2>&1 | tee "$OUT/tests.txt"
timeout 150 $PY bench/bench_latent_fix.py --device cuda --frames 81 --steps "$STEPS" 2>&1 | tee "$OUT/latent_fix.txt"
timeout 120 $PY bench/bench_fixer_step.py --device cuda --frames 81 --roi 160 --timeout 60 --mem-limit-gb 100 \
  --configs window+blocks+bf16,full+blocks+bf16,window+blocks,full+blocks 2>&1 | tee "$OUT/fixer_step.txt"
