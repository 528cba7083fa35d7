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
# PARTS (default: all but the two quality parts, in this order, the most needed first): tests (90 s)
# crops (45 s) cifar (150 s) split (120 s) linear (60 s) loop (140 s) workers (60 s) step (60 s) bf16 (75 s)
# methods (120 s) compile (160 s) - 1,080 s in all, more than one 600 s device call, so e.g. `bash
# benchmarks/gpu_check.sh results/benchmarks tests crops cifar split` (405 s) and the rest later. Quality parts, each a call of its own, on the CIFAR-10 subset unpacked at
# $CIFAR (default data/cifar10_subset: the first 2,000 train and 200 test images per class):
# recipes (560 s): every method's cifar10 recipe (solo-learn's), $RECIPE_EPOCHS epochs (default 5), report
#   with solo-learn's published numbers beside; ablation (560 s): ablate dino with the cifar10 recipe and
#   DINO App. D's center momentum / teacher temperature grid.
#
# Needs the suite installed (pip install -e .) and CUDA; on a lent device machine, which starts bare,
# benchmarks/device_run.sh installs the carried wheels and the suite, runs this and packs the results. Each part has its own time limit so one slow
# part (torch.compile) cannot take the others' time.
set -u
OUTDIR=${1:-results/benchmarks}
ALL="tests crops cifar split linear loop workers step bf16 methods compile"
QUALITY="recipes ablation"
PARTS=${*:2}
PARTS=${PARTS:-$ALL}
for p in $PARTS; do
    [[ " $ALL $QUALITY " == *" $p "* ]] || { echo "gpu_check.sh: unknown part '$p'; valid parts: $ALL $QUALITY" >&2; exit 2; }
done
CIFAR=${CIFAR:-data/cifar10_subset}
RECIPE="preset=cifar10 data.root=$CIFAR precision=bf16 data.augment=device data.num_workers=4
        optim.epochs=${RECIPE_EPOCHS:-5} optim.warmup_epochs=1 evals=knn,linear seed=0"
mkdir -p "$OUTDIR"
W=$(( $(nproc) - 2 ))
# CIFAR-sized (32 px) images ship at their own size; the device draws the 224/96 px crops
VITS="backbone=vit_small backbone.patch_size=16 backbone.img_size=224 backbone.depth=12 data.global_size=224
      data.local_size=96 optim.batch_size=128 data.num_workers=$W data.device_load_size=32"
DINO="method=dino $VITS data.n_local=10"
# the CIFAR setting: ResNet-18 with the CIFAR stem, 2x32 px crops, batch 512
CIFAR_RN18="preset=cifar10 backbone=resnet18 optim.batch_size=512 data.n_local=0 data.num_workers=$W precision=bf16
            data.augment=device"
part() {
    local limit=$1; shift; echo "== $*"; timeout "$limit" "$@" 2>&1 | grep -v Warning; echo "== rc=${PIPESTATUS[0]}"
    pkill -f "benchmarks/(throughput|options|step_split|crop_speed|linear_speed).py" 2>/dev/null  # a timed-out part's subprocesses
    [ "$OUTDIR" = results/benchmarks ] || cp results/benchmarks/*_gpu*.csv "$OUTDIR"/ 2>/dev/null; true
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, timm, lightly, kornia; print('torch', torch.__version__, 'timm', timm.__version__, 'lightly', lightly.__version__)"
for p in $PARTS; do case $p in
# tests: the GPU-only tests (device crops seeded per step, the GPU's random stream left alone; no host-device
#    sync inside the engine step, every method; k-NN and the torch linear probe on the GPU equal the CPU)
tests) part 90 python3 -m pytest -q -p no:cacheprovider tests/data/test_device_aug.py tests/engine/test_cuda_sync.py \
    tests/evals/test_knn.py ;;
# crops: the batched on-device crops against the kornia pipeline they replaced (CIFAR and ImageNet sizes)
crops) part 45 python3 benchmarks/crop_speed.py --rounds 3 --seconds 1 ;;
# cifar: the full loop at the CIFAR setting, DINO and SimCLR, suite vs peer (target >= 1.5x)
cifar) part 150 python3 benchmarks/throughput.py method=dino,simclr $CIFAR_RN18 --rounds 3 --steps 20 --warmup 10 \
    --images 8192 --no-loader --out throughput_gpu_cifar.csv ;;
# split: at the same setting, DINO's step, crops, loader and full loop alone, side by side with the peer's, and
#     the loop as a fraction of its parts in series (target >= 0.85)
split) part 120 python3 benchmarks/step_split.py method=dino $CIFAR_RN18 --rounds 3 --steps 10 --images 8192 \
    --out results/benchmarks/step_split_gpu_cifar.csv ;;
# linear: the linear probe's logistic regression on the GPU (torch L-BFGS) at issue 18's 50,000 x 2,048, and
#     both solvers side by side at 10,000 x 512
linear) part 60 python3 benchmarks/linear_speed.py --n 50000 --dim 2048 --sides torch
    part 60 python3 benchmarks/linear_speed.py --n 10000 --dim 512 ;;
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
# recipes: each method's cifar10 recipe on the subset, then the table with the published numbers beside
recipes) part 540 python3 -m ssl_bench sweep method=dino,simclr,byol,moco,moco_v3,swav $RECIPE progress=false \
    results_root=results/runs/gpu-recipes
    part 20 python3 -m ssl_bench report results_root=results/runs/gpu-recipes name=cifar10_recipes_gpu out="$OUTDIR" \
    columns=knn/top1,knn@init/top1,linear/top1,linear@init/top1,train/images_per_s ;;
# ablation: centering x sharpening with the DINO cifar10 recipe, and App. D's center momentum grid
ablation) part 540 python3 -m ssl_bench ablate dino $RECIPE evals=knn method.center_momentum=0.9,0.99,0.999 \
    results_root=results/runs/gpu-ablation out="$OUTDIR" ;;
esac; done
