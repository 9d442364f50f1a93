#!/usr/bin/env bash
# The open GPU measurements of issues 15-20, in groups that each fit one device call (at most 10 minutes).
#
#   usage (from the repository root, after the install line of scripts/gpu-wheels.sh):
#     benchmarks/gpu_suite.sh dit       # DiT forward (2.0, 2.3 Q4, ltx-core), block profile, LTX-2.5 + Gemma 4
#     benchmarks/gpu_suite.sh job       # vocoder + BWE, every tiling mode (plain and as the engine runs it), whole job
#     benchmarks/gpu_suite.sh session   # one serve session on a full-size checkpoint written to disk (~51 GB)
#     benchmarks/gpu_suite.sh weights   # LoRA fuse and forward, bf16 and Q4
#     benchmarks/gpu_suite.sh modes     # A2V and retake against T2V
#     benchmarks/gpu_suite.sh mixed     # low-RAM: a mixed-precision pack resident and streamed, both sizes
#     benchmarks/gpu_suite.sh kept      # low-RAM: Q4 with half its blocks held once read, against resident
#     benchmarks/gpu_suite.sh load      # ways of reading 10 GB onto the device from a cold page cache (~2 min)
#     benchmarks/gpu_suite.sh tiles     # every tiling mode against generate_av's tiles; a tile's decode per voxel;
#                                       # the decoded video's handoff to x264
#
# Each benchmark's JSON goes to $OUT/<name>.json (./gpu-results without $OUT), the tail of its stderr to logs.txt,
# and a line "<name> rc=<status> <seconds>s" to summary.txt (at most 7 files: the device returns 8); a failure or
# timeout of one does not stop the others.
# MLX's CUDA kernels compile once per machine (~40 s): the processes of a group share the cache.
# A group removes the files it wrote to disk when it ends: the machine's disk (64 GB) does not hold the session's
# checkpoint (~51 GB) and the low-RAM packs together (2026-12-05: low_ram.py ran out of space after a session).
set -uo pipefail
out=${OUT:-$PWD/gpu-results}
mkdir -p "$out"
export LTX_BACKEND_HOME=${LTX_BACKEND_HOME:-/tmp/ltx-home}
cd "$(dirname "$0")"

bench() {  # NAME SECONDS SCRIPT [ARGS...]
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" python3 "$@" >"$out/$name.json" 2>"/tmp/$name.log"
  echo "$name rc=$? $((SECONDS - start))s" | tee -a "$out/summary.txt"
  { echo "== $name"; tail -c 4000 "/tmp/$name.log"; } >>"$out/logs.txt"
}

case ${1:-} in
  dit)
    bench dit_compiled 150 transformer_forward.py --compile
    bench dit_split 150 transformer_forward.py --compile --split-blocks
    bench dit_q4_23 120 transformer_forward.py --compile --version 2.3 --quantize 4
    bench dit_ltx_core 120 transformer_forward.py --backend ltx-core
    bench dit_profile 60 transformer_profile.py
    bench ltx25_forward 120 ltx25_forward.py --compile
    ;;
  job)
    bench audio_decode 90 audio_decode.py --versions 2.3 --reference --repeat 3 --breakdown
    bench vae_decode 150 vae_decode.py --reference --repeat 3
    bench vae_decode_engine 150 vae_decode.py --progress --repeat 3 --modes none,auto,default,aggressive --auto-memory 16,12,8
    bench generate 180 generate.py --tiling none
    bench mux_tail 60 mux_tail.py
    ;;
  modes)
    bench modes 200 modes.py --runs 2
    ;;
  kept)
    # Half the blocks held once read (what the planner does where memory is left beside a streamed denoising).
    bench low_ram_half 570 low_ram.py --workdir /tmp/lowram --packs q4 --sizes 768x512x121 \
      --modes resident,streaming-half
    rm -rf /tmp/lowram
    ;;
  mixed)
    # The mixed pack's first job compiles a quantized kernel per bit width and group size: on a fresh machine
    # (2026-12-05, night) nothing came out of 300 s. Give it a call of its own.
    bench low_ram_mixed 570 low_ram.py --workdir /tmp/lowram --packs mixed --sizes 768x512x121,512x320x97 \
      --modes resident,streaming
    rm -rf /tmp/lowram
    ;;
  session)
    bench serve_session 570 serve_session.py --warmup --gemma-bits 4 --dir /tmp/ltx-serve-session
    rm -rf /tmp/ltx-serve-session
    ;;
  load)
    bench load_speed 200 load_speed.py --dir /tmp/load-speed --gb 10
    rm -rf /tmp/load-speed
    ;;
  tiles)
    # the named modes as the decode runs them, then generate_av's tiles of the same names (px/overlap/frames/overlap)
    bench vae_chunks 200 vae_decode.py --progress --repeat 3 \
      --modes none,default,auto,aggressive,spatial,conservative,temporal,512/64/64/24,384/64/48/16,256/64/32/8,512/64/0/0
    bench vae_tile_shapes 240 vae_tile_shapes.py
    bench video_handoff 90 video_handoff.py
    bench generate_profile 200 generate.py --tiling none --profile "$out/generate_profile.txt"
    ;;
  weights)
    bench lora 200 lora.py --version 2.3 --tokens 1536,6144 --precisions bf16,4 --repeat 3
    ;;
  *)
    echo "usage: $0 dit|job|session|weights|modes|mixed|kept|load|tiles" >&2
    exit 2
    ;;
esac
