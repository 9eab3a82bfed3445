#!/usr/bin/env bash
# The checks only a GPU can run, as one script (a CUDA machine with torch, the pack's requirements and the
# diffusers extra; PyAV is not used: the tests write PNG folders):
#   1. tests/test_other_device.py against CUDA (BGFS_TEST_DEVICE=cuda): the fixer, training, generation, the nodes'
#      fixes and `bgfs fix` with the computation on the GPU, compared with the same runs on the CPU;
#   2. bench_latent_fix.py: a whole Latent Anatomy Fixer run at 81 frames 832x480 through the full-size Wan 2.1 VAE
#      (random weights), gradients through bf16 and fp32 and bgfs_core's TAEHV in bf16 side by side;
#   3. bench_fixer_step.py: one step, windowed against full frame, bf16 and fp32, and windowed through bgfs_core's
#      TAEHV decoder (`bgfs fix --gradient-vae`).
# With COMFYUI_DIR (a ComfyUI checkout; its comfy/ package and einops, psutil, tqdm are all it needs here), the
# node's own path too: part 2 through ComfyUI's WanVAE class in bf16 (and through ComfyUI's TAEHV), and part 3's
# windowed step through it and through ComfyUI's TAEHV as the gradient decoder.
# Each part has its own time limit, so a slow one leaves the others their time; the exit status is 1 when any part
# failed or ran out of time. Logs: $OUT (default outputs/gpu_checks).
#
#   bash bench/gpu_checks.sh [STEPS]        # STEPS: the Latent Fixer run's steps (default 10; the node's is 30)
#   GRAD_DTYPES=bf16 STEP_CONFIGS=window+blocks+bf16,full+blocks+bf16 bash bench/gpu_checks.sh
#                                           # part 2's gradient dtypes (default bf16,fp32,tae-bf16), part 3's
#                                           # configurations
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_checks}
STEPS=${1:-10}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
rc=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import sys, torch, numpy, diffusers, mediapipe; print(sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'numpy', numpy.__version__, 'diffusers', diffusers.__version__, 'mediapipe',
mediapipe.__version__)"
} 2>&1 | tee "$OUT/env.txt" || rc=1
BGFS_TEST_DEVICE=cuda timeout 120 $PY -m pytest -q -p no:cacheprovider -rs --durations=5 tests/test_other_device.py \
  2>&1 | tee "$OUT/tests.txt" || rc=1
# an H200 took about 4 s a step in bf16 and 6 in fp32, plus about 15 s for loading and the untimed warm-ups; the
# TAEHV row (tae-bf16: `bgfs fix --gradient-vae`) has not run on a GPU yet
GRAD_DTYPES=${GRAD_DTYPES:-bf16,fp32,tae-bf16}
timeout $((60 + 14 * STEPS)) $PY bench/bench_latent_fix.py --device cuda --frames 81 --steps "$STEPS" \
  --grad-dtypes "$GRAD_DTYPES" 2>&1 | tee "$OUT/latent_fix.txt" || rc=1
configs=window+blocks+bf16,window-tae+bf16,full+blocks+bf16,window+blocks,full+blocks
if [ -n "${COMFYUI_DIR:-}" ]; then
  timeout $((60 + 10 * STEPS)) $PY bench/bench_latent_fix.py --device cuda --frames 81 --steps "$STEPS" \
    --grad-dtypes bf16,tae-bf16 --impl comfy 2>&1 | tee "$OUT/latent_fix_comfy.txt" || rc=1
  # each against the first: diffusers' windowed bf16 step
  configs=window+blocks+bf16,window+blocks+bf16+comfy,window-taehv+bf16+comfy,window-tae+bf16,full+blocks+bf16+comfy
  configs=$configs,full+blocks+bf16,window+blocks,full+blocks
fi
# --mem-limit-gb limits the host's memory (the models are built there), not the GPU's
timeout 240 $PY bench/bench_fixer_step.py --device cuda --frames 81 --roi 160 --timeout 60 --mem-limit-gb 100 \
  --configs "${STEP_CONFIGS:-$configs}" 2>&1 | tee "$OUT/fixer_step.txt" || rc=1
exit $rc
