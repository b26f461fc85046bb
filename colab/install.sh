#!/usr/bin/env bash
# Installs the package from this clone into a Colab runtime; the notebooks' setup cell runs it as
# `bash colab/install.sh "$python"`. First the JAX build of the runtime's accelerator (Colab's own JAX can be
# older than the library needs), then the package, editable, with its dependencies.
set -euo pipefail
python="${1:-python3}"
cd "$(dirname "$0")/.."
if [ -e /dev/accel0 ] || [ -e /dev/vfio/0 ] || [ -n "${TPU_ACCELERATOR_TYPE:-}" ] || [ -n "${COLAB_TPU_ADDR:-}" ]; then
  jax='jax[tpu]'
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  jax='jax[cuda12]'
else
  jax='jax'
fi
echo "installing $jax and unsupervised_jax from $(pwd)"
"$python" -m pip install -q --upgrade "$jax"
"$python" -m pip install -q -e .
