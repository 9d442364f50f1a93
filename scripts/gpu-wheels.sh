#!/usr/bin/env bash
# Prepare Python wheels for the GPU machine (x86-64, Python 3.12, CUDA 13 libraries already
# installed there beside PyTorch). At most 64 MiB travel at a time, working tree included, and the MLX CUDA
# wheel alone is ~90 MB. So the wheels are unpacked here into one site-packages tree, packed as one xz tar (the
# tree of mlx-cuda-13 + imageio-ffmpeg + the small ones: 160 MB as wheels, 125.5 MB as .tar.xz) and split into as
# few chunks as fit beside the working tree. There, the chunks unpack straight into /tmp/site: no pip run.
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
mkdir -p /tmp/gpu-wheels/site
for w in /tmp/gpu-wheels/*.whl; do unzip -q -o "$w" -d /tmp/gpu-wheels/site; done  # unzip keeps the exec bits (ffmpeg)
(cd /tmp/gpu-wheels/site && tar cf - .) | xz -9 -T0 > /tmp/gpu-wheels/site.tar.xz
# What travels beside a chunk: the tracked and untracked-but-not-ignored files, under 64 MiB with 2 MB to spare.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
room=$(( 64 * 1024 * 1024 - tree - 2000000 ))
(( room > 1000000 )) || { echo "the working tree ($tree bytes) leaves no room for a chunk in a 64 MiB call" >&2; exit 1; }
total=$(stat -c %s /tmp/gpu-wheels/site.tar.xz)
n=$(( (total + room - 1) / room ))
split -n "$n" -d /tmp/gpu-wheels/site.tar.xz .gpu/chunk-
echo "Wheels: $(cd /tmp/gpu-wheels && ls *.whl | tr '\n' ' ')"
echo "$n chunks in .gpu/. Take them to the GPU machine one at a time, back to back, each with:"
for c in .gpu/chunk-*; do
  echo "  (carrying $c)  mkdir -p /tmp/gpu && cp $c /tmp/gpu/"
done
echo "then begin the command that does the work (it may travel with the last chunk) with:"
echo "  mkdir -p /tmp/site && cat /tmp/gpu/chunk-* | xz -d | tar xf - -C /tmp/site && ln -sfn \"\$(python3 -c 'import site; print(site.getsitepackages()[0])')/nvidia\" /tmp/site/nvidia && export PYTHONPATH=/tmp/site:\$PWD;"
echo "and check:  python3 -c 'import mlx.core as mx; print(mx.default_device())'   # Device(gpu, 0)"
echo "Notes: fp32 matmuls use TF32 on that GPU unless MLX_ENABLE_TF32=0 (set it for parity checks). imageio-ffmpeg (68 MB) is not installed there: pass it as an extra argument to this script (more chunks) if a GPU run must mux."
