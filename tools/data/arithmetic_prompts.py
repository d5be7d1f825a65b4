#!/usr/bin/env python3
"""arithmetic_prompts.py: the online RL demo's prompt set: short sums (two numbers from 2 to 12) as
SmolLM2 chat conversations (its default system message, then the question), with the sum in the
"answer" column that exact_answer reads. Deterministic (seed 0).

usage: arithmetic_prompts.py OUT_JSONL COUNT
"""
import json
import random
import sys

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    rng = random.Random(0)
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        for _ in range(int(sys.argv[2])):
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            row = {"prompt": [{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": f"What is {a} + {b}? Reply with the number only."}],
                   "answer": str(a + b)}
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
