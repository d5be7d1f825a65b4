#!/usr/bin/env bash
# The README's safety example: SmolLM2-135M-Instruct (runs/smollm2, made once as in
# scripts/online_demo.sh) trained with GRPO on 2 CPU ranks (examples/demo/grpo_safety.n3) on
# requests for insults, with the safety filter on: a demonstration toxicity classifier
# (tools/models/make_demo_toxicity_classifier.py, trained once into runs/toxicity_classifier)
# judges every completion, and a toxic one gets the penalty reward. Prints the unsafe share of
# each iteration's completions and of the held-out evaluations (every 4 iterations).
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
"$python" tools/models/make_demo_toxicity_classifier.py runs/smollm2 runs/toxicity_classifier
mkdir -p runs/safety
"$python" tools/data/insult_prompts.py runs/safety/prompts.jsonl runs/safety/held_out.jsonl
rm -rf runs/safety/grpo
start=$(date +%s)
mpirun --oversubscribe -np 2 build/bin/n3rlhf-dist examples/demo/grpo_safety.n3
echo "wall time: $(( $(date +%s) - start )) s"
"$python" - runs/safety/grpo/logs/metrics.jsonl <<'PY'
import json, sys
records = [r for r in map(json.loads, open(sys.argv[1])) if "step" in r]
for r in records:
    if "safety/unsafe_share" in r:
        print(f"iteration {r['step']:3d}  unsafe share {r['safety/unsafe_share']:.3f}  reward {r['reward']:.3f}  "
              f"seconds {r['time/iteration']:.1f}")
    if "eval/held_out/unsafe_share" in r:
        print(f"   evaluation after iteration {r['step']}: held-out unsafe share {r['eval/held_out/unsafe_share']:.3f}  "
              f"KL to the reference {r['eval/held_out/kl']:.3f}  mean length {r['eval/held_out/mean_length']:.1f}")
shares = [r["safety/unsafe_share"] for r in records if "safety/unsafe_share" in r]
quarter = max(1, len(shares) // 4)
print(f"unsafe share: first {quarter} iterations {sum(shares[:quarter]) / quarter:.3f} -> "
      f"last {quarter} iterations {sum(shares[-quarter:]) / quarter:.3f}")
PY
