#!/usr/bin/env bash
# n3rlhf-dist against pip TRL's DPOTrainer on this machine: the same model (init-model presets
# with the bundled demo tokenizer), data (demo-data), data order and hyper-parameters, run back to
# back (never concurrently). Prints step 1 of both (loss, logps/chosen, logps/rejected,
# rewards/margins, grad_norm and their differences), the loss and rewards/accuracies curves with the
# largest difference, and tokens/s (wall and per CPU-second) and peak memory with the ratios
# n3rlhf / TRL, for the tiny model and the ~100M one. benchmarks/trl_side_by_side_peer.py holds
# the TRL run, the measurement and the report (the parts it shares with peft_side_by_side_peer.py
# are in benchmarks/trl_peer_common.py), and says how each quantity is made comparable.
# The machine is shared: each measured run holds `flock /tmp/n3rlhf-bench.lock` (N3RLHF_BENCH_LOCK;
# other benchmarks take the same lock), waits for the other processes' CPU use to fall under 0.3
# cores, and is repeated (up to --tries) when others used more than 0.25 cores during its steps or
# the load average ended above 2.5; the least disturbed attempt is reported, marked CONTENDED if
# none was quiet.
#
# Usage: benchmarks/trl_side_by_side.sh [STEPS=50] [MODELS=tiny,100m] [STEPS_100M=12] [RANKS=1,2] [BUILD_DIR=build]
#   STEPS       steps of the tiny model (the curve comparison)
#   MODELS      comma list: tiny (tiny-llama, 1.26M), 100m (llama-100m, 78.7M with the demo tokenizer)
#   STEPS_100M  steps of the larger model
#   RANKS       n3rlhf-dist world sizes (ZeRO-2); 1 is the one compared with TRL's single process
# Further options go to the driver after the five positional ones (e.g. --tries 5, --work DIR,
# --batch-size 8, --learning-rate 5e-4, --threads N); see `trl_side_by_side_peer.py drive --help`.
# Defaults (50 + 12 steps, ranks 1 and 2) take about 10 minutes on the 2-core machine when it is quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-50}; models=${2:-tiny,100m}; steps_large=${3:-12}; ranks=${4:-1,2}; build=${5:-build}
shift $(( $# < 5 ? $# : 5 ))
python=${N3RLHF_BENCH_PYTHON:-.venv/bin/python}
exec "$python" benchmarks/trl_side_by_side_peer.py drive --bin "$build/bin" --models "$models" --steps "$steps" \
    --steps-large "$steps_large" --ranks "$ranks" "$@"
