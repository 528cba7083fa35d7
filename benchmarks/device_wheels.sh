#!/usr/bin/env bash
# Fetch, here, the wheels a lent GPU machine lacks (it reaches no package index; its image has torch, timm,
# pandas, scikit-learn, seaborn, tabulate, safetensors, tensorboard): the versions installed on this machine,
# for its Python 3.12, into .whl/ (git-ignored). A device call then carries them: carry [".whl", ...] and
# `bash benchmarks/device_run.sh PARTS` installs them first.
set -euo pipefail
mkdir -p .whl
ver() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
PLAT="$PLAT --platform manylinux_2_34_x86_64 --platform manylinux_2_24_x86_64 --platform any"
for pkg in lightly hydra-core omegaconf submitit kornia kornia_rs; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLAT -d .whl "$pkg==$(ver "$pkg")"
done
# antlr4-python3-runtime (omegaconf's and hydra's parser) ships as a source archive only: build its wheel
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(ver antlr4-python3-runtime)"
ls -la .whl && du -sh .whl
