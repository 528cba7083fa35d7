#!/usr/bin/env bash
# Pack the CIFAR-10 subset a lent GPU machine trains on (it cannot reach ../shared): the first 2,000 train
# and 200 test images of each class (sorted file names) into data/cifar10_subset.tar.gz (~50 MB, git-ignored).
# Carry it with the device call (carry: ["data/cifar10_subset.tar.gz"]) and unpack there with
#     tar xzf data/cifar10_subset.tar.gz -C data
set -euo pipefail
SRC=${1:-../shared/data/cifar10}
OUT=data/cifar10_subset
rm -rf "$OUT" && mkdir -p "$OUT"
for split_n in train:2000 test:200; do
    split=${split_n%%:*}; n=${split_n##*:}
    for d in "$SRC/$split"/*/; do
        c=$(basename "$d"); mkdir -p "$OUT/$split/$c"
        ls "$d" | sort | sed -n "1,${n}p" | sed "s|^|$d|" | xargs cp -t "$OUT/$split/$c/"  # reads all: no SIGPIPE
    done
done
tar czf data/cifar10_subset.tar.gz -C data cifar10_subset
du -h data/cifar10_subset.tar.gz
