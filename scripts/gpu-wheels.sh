#!/usr/bin/env bash
# Prepare Python wheels for the GPU machine (x86-64, Python 3.12, CUDA 13 libraries already
# installed there beside PyTorch). At most 64 MiB travel at a time and the MLX CUDA wheel alone is
# ~90 MB, so the wheels are packed into one tar and split into chunks of 40 MB.
#
# Usage, from the project root:   scripts/gpu-wheels.sh [EXTRA_REQUIREMENT ...]
# It writes .gpu/chunk-00, .gpu/chunk-01, ... (ignored by git) and prints what to run there.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu /tmp/gpu-wheels && mkdir -p .gpu /tmp/gpu-wheels
plat=(--platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform any)
# mlx + its CUDA 13 backend; the backend's nvidia-* needs are met by the PyTorch install there.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plat[@]}" -d /tmp/gpu-wheels "mlx==0.32.4" "mlx-cuda-13==0.32.4" msgspec soundfile cffi pycparser "$@"
(cd /tmp/gpu-wheels && tar cf - *.whl) | split -b 40000000 -d - .gpu/chunk-
n=$(ls .gpu | wc -l)
echo "Wheels: $(ls /tmp/gpu-wheels | tr '\n' ' ')"
echo "$n chunks in .gpu/. Take them to the GPU machine one at a time, back to back, each with:"
for c in .gpu/chunk-*; do
  echo "  (carrying $c)  mkdir -p /tmp/gpu && cp $c /tmp/gpu/"
done
echo "then begin the command that does the work (it may travel with the last chunk) with:"
echo "  cat /tmp/gpu/chunk-* | tar xf - -C /tmp/gpu && python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/gpu/*.whl && ln -sfn \"\$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia\" /tmp/site/nvidia && export PYTHONPATH=/tmp/site:\$PWD;"
echo "and check:  python3 -c 'import mlx.core as mx; print(mx.default_device())'   # Device(gpu, 0)"
echo "Notes: fp32 matmuls use TF32 on that GPU unless MLX_ENABLE_TF32=0 (set it for parity checks). imageio-ffmpeg (65 MB) is not installed there: pass it as an extra argument to this script (two more chunks) if a GPU run must mux."
