#!/usr/bin/env bash
# The GPU throughput check of the performance issue, as one script (a lent GPU machine's time is short).
# DINO ViT-S/16 at 224/96 px (2 global + 10 local crops, batch 128, bf16): the suite (crops drawn on the
# GPU, data.augment=device) against lightly's plain loop (its DINOTransform in DataLoader workers), the
# fraction of the card's bf16 matmul peak measured in the same run, loader workers, the step alone, bf16
# on/off, the other methods at 224 px, compile on/off (in that order: a part cut off by a call's limit is
# the least needed).
#
#     bash benchmarks/gpu_check.sh [OUTDIR] [PARTS...]   # CSVs under results/benchmarks/*_gpu*.csv, log in OUTDIR
#
# PARTS (default: all, in this order, the most needed first): tests (90 s) loop (140 s) workers (60 s)
# step (60 s) bf16 (75 s) methods (120 s) compile (160 s) - 705 s in all, more than one 600 s device call,
# so e.g. `bash benchmarks/gpu_check.sh results/benchmarks tests loop workers step` (350 s) and the rest later.
#
# Needs the suite installed (pip install -e .) and CUDA. Each part has its own time limit so one slow
# part (torch.compile) cannot take the others' time.
set -u
OUTDIR=${1:-results/benchmarks}
ALL="tests loop workers step bf16 methods compile"
PARTS=${*:2}
PARTS=${PARTS:-$ALL}
for p in $PARTS; do
    [[ " $ALL " == *" $p "* ]] || { echo "gpu_check.sh: unknown part '$p'; valid parts: $ALL" >&2; exit 2; }
done
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
for p in $PARTS; do case $p in
# tests: the GPU-only tests (device crops seeded per step, the GPU's random stream left alone; no host-device
#    sync inside the engine step, every method)
tests) part 90 python3 -m pytest -q -p no:cacheprovider tests/test_device_aug.py tests/test_cuda_sync.py ;;
# loop: the full loop, suite vs peer, bf16 (the GPU setting), with MFU
loop) part 140 python3 benchmarks/throughput.py $DINO precision=bf16 data.augment=device --rounds 3 --steps 10 --warmup 5 \
    --images 4096 --no-loader --out throughput_gpu.csv ;;
# workers: the loop with 2 loader workers instead of nproc-2: with crops drawn on the GPU the workers only ship
#     uint8 images, and 14 of them may take CPU from the process that launches the kernels
workers) part 60 python3 benchmarks/options.py $DINO precision=bf16 data.augment=device --options "data.num_workers=2" \
    --rounds 3 --steps 8 --warmup 4 --images 2048 --out options_gpu_workers.csv ;;
# step: the step alone on one fixed batch (grouped, per-crop, peer)
step) part 60 python3 benchmarks/step_split.py $DINO precision=bf16 data.augment=device --rounds 3 --steps 5 --images 1024 \
    --out results/benchmarks/step_split_gpu.csv ;;
# bf16: bf16 against fp32
bf16) part 75 python3 benchmarks/options.py $DINO data.augment=device --options "precision=bf16" --rounds 3 --steps 5 \
    --warmup 3 --images 1024 --out options_gpu_bf16.csv ;;
# methods: the other methods at 224 px (SwAV with 6 local 96 px crops), bf16
methods) part 120 python3 benchmarks/throughput.py method=simclr,byol,moco,swav $VITS precision=bf16 data.augment=device \
    --rounds 3 --steps 8 --warmup 4 --images 2048 --no-loader --out throughput_gpu_methods.csv ;;
# compile: torch.compile on top of bf16 (0.98x when last measured)
compile) part 160 python3 benchmarks/options.py $DINO precision=bf16 data.augment=device --options "compile=true" --rounds 3 \
    --steps 5 --warmup 4 --images 1024 --out options_gpu_compile.csv ;;
esac; done
