"""prepare_peer.py: the peer side of prepare_benchmark.sh, and the data it runs on.

  prepare_peer.py generate OUT.jsonl ROWS        writes a preference JSONL (seeded, varied lengths)
  prepare_peer.py trl DATA.jsonl TOKENIZER_DIR   times TRL 1.x's DPO data preparation (JSON load,
                                                 EOS, tokenize, filter) on one process; prints JSON
"""
import json
import os
import random
import sys
import time
import types

WORDS = ("the a of to and in is it that for on with as was be by this are or from at which have an not but "
         "model reward policy gradient token prompt answer value step rank shard batch loss sample data "
         "caf\u00e9 na\u00efve \u00fcber \u4f60\u597d \u043f\u0440\u0438\u0432\u0435\u0442 2 3 17 42 1024 "
         "Paris Rome blue green yes no").split()


def sentence(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + rng.choice([".", "?", "!", ""])


def generate(path, rows):
    rng = random.Random(1234)
    with open(path, "w") as f:
        for i in range(rows):
            prompt = sentence(rng, rng.randint(5, 60))
            chosen = " " + sentence(rng, rng.randint(3, 120))
            rejected = " " + sentence(rng, rng.randint(3, 120))
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")


def run_trl(path, tokenizer_dir):
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    from datasets import Dataset, disable_caching
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import DPOTrainer

    disable_caching()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    started = time.perf_counter()
    cpu_started = time.process_time()
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    dataset = Dataset.from_list(rows)
    args = types.SimpleNamespace(dataset_num_proc=None, max_length=1024, truncation_mode="keep_start")
    prepared = DPOTrainer._prepare_dataset(types.SimpleNamespace(_tokenizer=tokenizer), dataset, tokenizer, args, "train")
    tokens = sum(len(p) * 2 + len(c) + len(r) for p, c, r in zip(prepared["prompt_ids"], prepared["chosen_ids"],
                                                                      prepared["rejected_ids"]))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "cpu_seconds": time.process_time() - cpu_started, "rows": len(rows),
                      "examples": len(prepared), "tokens": tokens, "bytes": os.path.getsize(path)}))


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]))
    else:
        run_trl(sys.argv[2], sys.argv[3])
