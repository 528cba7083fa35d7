#!/usr/bin/env bash
# The GPU throughput check of the performance issue, as one script (a lent GPU machine's time is short).
# DINO ViT-S/16 at 224/96 px (2 global + 10 local crops, batch 128, bf16): the suite (crops drawn on the
# GPU, data.augment=device) against lightly's plain loop (its DINOTransform in DataLoader workers), the
# fraction of the card's bf16 matmul peak measured in the same run, compile and bf16 on/off, the step
# alone, then the other methods (in that order: a part cut off by the call's limit is the least needed) at 224 px.
#
#     bash benchmarks/gpu_check.sh [OUTDIR]       # CSVs under results/benchmarks/*_gpu*.csv, log in OUTDIR
#
# Needs the suite installed (pip install -e .) and CUDA. Each part has its own time limit so one slow
# part (torch.compile) cannot take the others' time.
set -u
OUTDIR=${1:-results/benchmarks}
mkdir -p "$OUTDIR"
W=$(( $(nproc) - 2 ))
# CIFAR-sized (32 px) images ship at their own size; the device draws the 224/96 px crops
VITS="backbone=vit_small backbone.patch_size=16 backbone.img_size=224 backbone.depth=12 data.global_size=224
      data.local_size=96 optim.batch_size=128 data.num_workers=$W data.device_load_size=32"
DINO="method=dino $VITS data.n_local=10"
part() {
    local limit=$1; shift; echo "== $*"; timeout "$limit" "$@" 2>&1 | grep -v Warning; echo "== rc=${PIPESTATUS[0]}"
    pkill -f "benchmarks/(throughput|options|step_split).py" 2>/dev/null  # a timed-out part's subprocesses
    [ "$OUTDIR" = results/benchmarks ] || cp results/benchmarks/*_gpu*.csv "$OUTDIR"/ 2>/dev/null; true
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, timm, lightly, kornia; print('torch', torch.__version__, 'timm', timm.__version__, 'lightly', lightly.__version__)"
# 0. the GPU-only tests (device crops seeded per step, the GPU's random stream left alone; no host-device
#    sync inside the engine step, every method)
part 90 python3 -m pytest -q -p no:cacheprovider tests/test_device_aug.py tests/test_cuda_sync.py
# 1. the full loop, suite vs peer, bf16 (the GPU setting), with MFU
part 140 python3 benchmarks/throughput.py $DINO precision=bf16 data.augment=device --rounds 3 --steps 10 --warmup 5 \
    --images 4096 --no-loader --out throughput_gpu.csv
# 1b. the loop with 2 loader workers instead of nproc-2: with crops drawn on the GPU the workers only ship
#     uint8 images, and 14 of them may take CPU from the process that launches the kernels
part 60 python3 benchmarks/options.py $DINO precision=bf16 data.augment=device --options "data.num_workers=2" \
    --rounds 3 --steps 8 --warmup 4 --images 2048 --out options_gpu_workers.csv
# 2. bf16 against fp32, then torch.compile on top of bf16
part 75 python3 benchmarks/options.py $DINO data.augment=device --options "precision=bf16" --rounds 3 --steps 5 \
    --warmup 3 --images 1024 --out options_gpu_bf16.csv
part 160 python3 benchmarks/options.py $DINO precision=bf16 data.augment=device --options "compile=true" --rounds 3 \
    --steps 5 --warmup 4 --images 1024 --out options_gpu_compile.csv
# 3. the step alone on one fixed batch (grouped, per-crop, peer)
part 60 python3 benchmarks/step_split.py $DINO precision=bf16 data.augment=device --rounds 3 --steps 5 --images 1024 \
    --out results/benchmarks/step_split_gpu.csv
# 4. the other methods at 224 px (SwAV with 6 local 96 px crops), bf16
part 120 python3 benchmarks/throughput.py method=simclr,byol,moco,swav $VITS precision=bf16 data.augment=device \
    --rounds 3 --steps 8 --warmup 4 --images 2048 --no-loader --out throughput_gpu_methods.csv
