#!/usr/bin/env bash
# The one prepared run for a session lent a GPU (the workplace's `device` tool: one H100/H200, 15 minutes in
# all, at most 10 minutes a call): a headline flagfile's 3 seeds as 3 processes sharing the GPU, then the
# record assembled from their eval.json, with a benchmark first. Run from the repository root.
#
#   bash benchmarks/device_run.sh start  METHOD FLAGFILE [BENCHMARK ARGS...]   # first call (<= WAIT_S s)
#   bash benchmarks/device_run.sh finish METHOD FLAGFILE                        # next call, at once
#
# start:  installs the wheels carried in .whl/ (what the device image lacks, e.g. tensorboardX), runs
#         `python benchmarks/BENCHMARK ARGS` if given, starts the seeds detached (setsid: they outlive the
#         call while the machine stays warm, ~30 s between calls), and waits for them up to WAIT_S seconds.
# finish: waits for the seeds (up to WAIT_S), then `python -m experiments.METHOD --flagfile=FLAGFILE`
#         over all seeds, which reuses each finished seed's eval.json and writes results/<record>.json.
# Either call packs what exists into $OUT (at most 8 files come back): the records, a tarball of the
# workdir without checkpoints (metrics.jsonl, eval.json, figures), the seeds' logs.
#
# Data: MNIST's keras mnist.npz carried in .data/ (UNSUPERVISED_JAX_DATA_DIR=.data). Example (#20):
#   start mice experiments/configs/mice_mnist.flags mice_step.py --backbone=resnet34_cifar
# TINY=1 shrinks everything to a CPU check on digits (no GPU needed; ~3 min on 2 cores), the test of this
# script before a device call: TINY=1 OUT=/tmp/out bash benchmarks/device_run.sh start mice \
#   experiments/configs/mice_mnist.flags mice_step.py --backbone=resnet34_cifar, then the same with finish.
# The device tool's call (carry [".data", ".whl"]; .git/info/exclude lists both), e.g.:
#   mkdir -p .data .whl && cp ../shared/data/mnist.npz .data/ && pip download --no-deps --only-binary=:all: \
#     --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 -d .whl tensorboardX
set -u -o pipefail
phase=${1:?start or finish}; method=${2:?METHOD}; flagfile=${3:?FLAGFILE}; shift 3
case "$phase" in start|finish) ;; *) echo "phase must be start or finish, not $phase" >&2; exit 2 ;; esac
[ -f "$flagfile" ] || { echo "no flagfile $flagfile" >&2; exit 2; }
name=$(basename "$flagfile" .flags)
workdir=runs/device/$name
out=${OUT:-/tmp/device_out}
wait_s=${WAIT_S:-540}
seeds=${SEEDS:-0,1,2}
export PYTHONUNBUFFERED=1 UNSUPERVISED_JAX_DATA_DIR=${UNSUPERVISED_JAX_DATA_DIR:-$PWD/.data}
# The device image has jax (CUDA), flax, optax, orbax, scipy, scikit-learn, matplotlib and tqdm, not this
# package: it runs from the tree (the benchmarks import it too).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
# Three processes share one GPU: each takes memory as it needs it, not 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
results_dir=results
extra=()
if [ "${TINY:-0}" = 1 ]; then  # nothing lands in results/
  extra=(--dataset=digits --num_steps=12 --checkpoint_every=6 --log_every=6 --nofigures)
  [ "$method" = mice ] && extra+=(--queue_size=256)  # MiCE's queue: a flag of MiCE alone
  workdir=runs/device_tiny/$name
  results_dir=$workdir/results
fi
mkdir -p "$out" "$workdir"
start=$SECONDS

if [ -d .whl ] && compgen -G '.whl/*.whl' > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || exit 1
fi
python3 -c 'import jax; print("devices:", jax.devices())'
echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"

pack() {
  tar czf "$out/$name-workdir.tar.gz" --exclude='checkpoints' --exclude='*.tmp' -C "$(dirname "$workdir")" \
    "$(basename "$workdir")" 2>/dev/null
  cp "$workdir"/seed_*.log "$out"/ 2>/dev/null
  for f in "$results_dir"/*.json; do  # the records this run wrote or changed
    git ls-files --error-unmatch "$f" > /dev/null 2>&1 && git diff --quiet HEAD -- "$f" || cp "$f" "$out"/
  done
  ls -l "$out"
}

running() { pgrep -f -- "--workdir=$workdir( |\$)" > /dev/null; }

wait_seeds() {  # until no seed runs or WAIT_S since the call began
  while running && [ $((SECONDS - start)) -lt "$wait_s" ]; do
    sleep 10
    tail -qn 1 "$workdir"/seed_*.log 2>/dev/null | cut -c1-160
  done
  ! running
}

case "$phase" in
  start)
    if [ $# -gt 0 ]; then
      bench=(python3 "benchmarks/$1" "${@:2}")
      [ "${TINY:-0}" = 1 ] && bench+=(--batch_size=16 --steps=1 --rounds=1)  # flags every step benchmark takes
      bench+=(--results_dir="$results_dir")
      "${bench[@]}" || echo "benchmark failed: ${bench[*]}"
    fi
    for seed in ${seeds//,/ }; do
      setsid python3 -m experiments."$method" --flagfile="$flagfile" "${extra[@]}" --seeds="$seed" --results_dir= \
        --noprogress --workdir="$workdir" > "$workdir/seed_$seed.log" 2>&1 < /dev/null &
    done
    sleep 5
    wait_seeds && echo "all seeds finished: run finish now" || echo "seeds still running: run finish at once"
    ;;
  finish)
    if wait_seeds; then
      python3 -m experiments."$method" --flagfile="$flagfile" "${extra[@]}" --seeds="$seeds" --noprogress \
        --results_dir="$results_dir" --workdir="$workdir" 2>&1 | tee "$workdir/record.log"
    else
      echo "seeds still running after ${wait_s} s; their logs and metrics come back, no record"
    fi
    ;;
esac
pack
