#!/usr/bin/env bash
# Wheels for `make gpu-check` on a GPU machine that has CUDA torch but cannot reach PyPI (the lent H100/H200 image:
# torch 2.11, transformers 5.17, accelerate 1.15; no datasets, torchdata, blingfire or deepspeed). Run it here, where
# PyPI is reachable, after `make test` or `make demo` made .venv: the versions are that .venv's, the ones the suite
# passed with; torch is never among them.
#   bash benchmarks/gpu_wheels.sh [OUT_DIR, default .whl]
set -euo pipefail
out=$(realpath -m "${1:-.whl}")
python=${PYTHON:-.venv/bin/python}
packages="datasets dill multiprocess torchdata blingfire evaluate transformers tokenizers accelerate huggingface_hub
  httpx2 httpcore2 kernels truststore hjson pydantic pydantic_core annotated_types typing_inspection safetensors tomlkit"
version() { $python -c "import sys; from importlib.metadata import version; print(version(sys.argv[1]))" "$1"; }
pins=$(for p in $packages; do echo "$p==$(version "$p")"; done)
rm -rf "$out" && mkdir -p "$out"
# shellcheck disable=SC2086
$python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out" $pins
# DeepSpeed is published as source only: built here into a pure-Python wheel (its CUDA ops compile on first use)
DS_BUILD_OPS=0 $python -m pip wheel -q --no-deps --no-build-isolation -w "$out" "deepspeed==$(version deepspeed)"
# blingfire's wheel is 42 MB of tokenizer models this repository does not use: its sentence splitter (the Linux
# library and __init__.py) is all that is kept, so that the wheels fit the device's 64 MiB transfer
$python - "$out"/blingfire-*.whl <<'PY'
import os, sys, zipfile
path, kept = sys.argv[1], ("blingfire/__init__.py", "blingfire/libblingfiretokdll.so")
with zipfile.ZipFile(path) as src, zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if not item.filename.startswith("blingfire/") or item.filename in kept:
            dst.writestr(item, src.read(item))
os.replace(path + ".tmp", path)
PY
du -sh "$out"
