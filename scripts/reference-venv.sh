#!/usr/bin/env bash
# Create a venv with the official PyTorch reference (ltx-core, ltx-pipelines 1.0.0) on CPU torch 2.13,
# for generating parity fixtures. Not needed by CI or by the tests (fixtures are committed).
#   usage: scripts/reference-venv.sh [VENV_DIR]     (default /tmp/ltx-ref-venv)
# Notes: ltx-core declares torchaudio, which has no CPU build for torch 2.13 here, so the packages are
# installed with --no-deps; only the encoder-side audio preprocessing imports torchaudio. ltx-pipelines
# imports PyAV/Pillow at module level for media I/O, which fixture generators do not need.
set -euo pipefail
venv=${1:-/tmp/ltx-ref-venv}
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0 numpy safetensors einops scipy tqdm "transformers>=4.52"
"$venv/bin/pip" install -q --no-deps ltx-core==1.0.0 ltx-pipelines==1.0.0
"$venv/bin/python" -c "import torch, ltx_core; print('torch', torch.__version__, '| ltx_core ok')"
echo "reference venv ready: $venv/bin/python"
echo "ltx_core.model.audio_vae.{ops,vocoder,audio_vae} do 'import torchaudio' (used only by the encoder-side"
echo "AudioProcessor: torchaudio.transforms.MelSpectrogram, torchaudio.functional.resample). Before importing"
echo "them in a fixture generator, register a stand-in: sys.modules['torchaudio'] = types.ModuleType('torchaudio')"
echo "(with .transforms/.functional submodules) - the decoder, vocoder and BWE paths never call it."
