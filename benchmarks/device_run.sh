#!/usr/bin/env bash
# The whole command of a device call (a lent GPU machine starts bare): install the carried wheels and the
# suite, unpack the carried CIFAR-10 subset, run gpu_check.sh's PARTS, and pack the CSVs, the tables and the
# log into $OUT/gpu_results.tar.gz (a call returns at most 8 files). Prepare here first:
#     bash benchmarks/device_wheels.sh && bash benchmarks/make_cifar_subset.sh
# then call the device tool with carry [".whl", "data/cifar10_subset.tar.gz"] and the command
#     bash benchmarks/device_run.sh tests crops cifar split
# and unpack the archive it returns over the repo (tar xzf gpu_results.tar.gz).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
[ -f data/cifar10_subset.tar.gz ] && [ ! -d data/cifar10_subset ] && tar xzf data/cifar10_subset.tar.gz -C data
bash benchmarks/gpu_check.sh results/benchmarks "$@" 2>&1 | tee results/benchmarks/gpu_check.log
tar czf "$OUT/gpu_results.tar.gz" results/benchmarks results/tables results/figures 2>/dev/null
ls -la "$OUT"
