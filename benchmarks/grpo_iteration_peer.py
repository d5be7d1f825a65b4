#!/usr/bin/env python3
"""grpo_iteration_peer.py: one GRPO iteration of n3rlhf-dist against pip TRL's GRPOTrainer on
this machine, run back to back (never concurrently) under the benchmark lock
(N3RLHF_BENCH_LOCK, /tmp/n3rlhf-bench.lock): the same model directory, prompts, completions per
prompt (G), max_new_tokens, sampling settings (temperature 1, no top-k/top-p), loss (dapo,
beta 0), one optimizer step per iteration over all the iteration's completions, and the same
reward: exact_answer on the data's "answer" column (TRL gets a Python port of n3rlhf's rule:
the last number of the completion against the answer).

Each side runs ITERATIONS iterations; the first is a warm-up and the mean of the others is
reported: seconds per iteration, the share of it spent generating, generated tokens per second,
the share of groups whose rewards are all equal, and the ratio n3rlhf / TRL of iterations per
second. n3rlhf runs twice: as configured by default (grpo.skip_zero_advantage: groups whose
rewards are all equal carry no gradient with beta 0 and skip the forward and backward; the same
step) and with the skip off (the same work as TRL's, which trains every group). TRL runs at its best CPU settings here:
torch threads = the cores, no vLLM (not on CPU), use_cache on, bf16 off (fp32 on both).

usage: grpo_iteration_peer.py --model DIR [--prompts 4] [--generations 8] [--max-new-tokens 64]
                              [--iterations 3] [--bin build/bin] [--work DIR]
"""
import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time

LOCK = os.environ.get("N3RLHF_BENCH_LOCK", "/tmp/n3rlhf-bench.lock")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def write_prompts(path, count):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(count):
            a, b = 3 + (i * 7) % 40, 5 + (i * 11) % 50
            f.write(json.dumps({"prompt": f"What is {a} + {b}? Answer with the number only.", "answer": str(a + b)}) + "\n")


def last_number_reward(completions, answer, **_):
    """n3rlhf's exact_answer(extract: "last_number"): 1 when the completion's last number equals the answer."""
    out = []
    for text, expected in zip(completions, answer):
        if isinstance(text, list):
            text = text[-1]["content"]
        found = NUMBER.findall(text)
        given = found[-1].replace(",", "") if found else None
        try:
            out.append(1.0 if given is not None and abs(float(given) - float(expected)) <= 1e-9 * max(1.0, abs(float(expected))) else 0.0)
        except ValueError:
            out.append(0.0)
    return out


def run_trl(args):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    batch = args.prompts * args.generations
    config = GRPOConfig(output_dir=args.out, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                        num_generations=args.generations, max_completion_length=args.max_new_tokens, num_iterations=1,
                        loss_type="dapo", beta=0.0, temperature=1.0, top_k=0, top_p=1.0, learning_rate=1e-6,
                        max_steps=args.iterations, logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
                        seed=args.seed, bf16=False, shuffle_dataset=False)
    trainer = GRPOTrainer(model=model, args=config, reward_funcs=[last_number_reward], train_dataset=dataset,
                          processing_class=tokenizer)
    timings = {"generation": []}
    original = trainer._generate_and_score_completions

    def timed(*a, **k):
        start = time.perf_counter()
        result = original(*a, **k)
        timings["generation"].append(time.perf_counter() - start)
        return result

    trainer._generate_and_score_completions = timed
    steps, tokens = [], []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            steps.append(time.perf_counter() - self.start)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                tokens.append(logs["completions/mean_length"] * batch)
            if logs and "reward" in logs:
                timings.setdefault("reward", []).append(logs["reward"])
            if logs and "frac_reward_zero_std" in logs:
                timings.setdefault("zero_std", []).append(logs["frac_reward_zero_std"])

    trainer.add_callback(StepTimer())
    trainer.train()
    json.dump({"seconds": steps, "generation_seconds": timings["generation"], "tokens": tokens,
               "reward": timings.get("reward", []), "zero_std": timings.get("zero_std", [])}, open(args.result, "w"))


def run_n3rlhf(args, work, skip):
    out = os.path.join(work, "n3rlhf-out" if skip else "n3rlhf-noskip-out")
    job = os.path.join(work, "grpo.n3" if skip else "grpo-noskip.n3")
    with open(job, "w", encoding="utf-8") as f:
        f.write(f'''train rlhf "GrpoBenchmark" {{
  base_model: "{args.model}"
  algorithm: "grpo"
  dataset: "{args.data}"
  rewards: [ exact_answer(column: "answer", extract: "last_number") ]
  hyperparameters: {{ learning_rate: 1e-6  max_steps: {args.iterations}  lr_scheduler: "constant"  seed: {args.seed}  max_prompt_length: 256  max_length: 1024 }}
  ppo: {{ rollout_batch_size: {args.prompts}  mini_batch_size: {args.prompts * args.generations}  ppo_epochs: 1  max_new_tokens: {args.max_new_tokens}  temperature: 1.0 }}
  grpo: {{ num_generations: {args.generations}  loss_type: "dapo"  beta: 0.0  skip_zero_advantage: {"true" if skip else "false"} }}
  logging: {{ tracker: "jsonl"  log_interval: 1  save_interval: 0 }}
  output: {{ dir: "{out}" }}
}}
''')
    subprocess.run([os.path.join(args.bin, "n3rlhf-dist"), job], check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in open(os.path.join(out, "logs", "metrics.jsonl"), encoding="utf-8") if line.strip()]
    records = [r.get("scalars", r) for r in records]
    records = [r for r in records if "time/iteration" in r]
    return {"seconds": [r["time/iteration"] for r in records],
            "generation_seconds": [r["time/iteration"] * r["time/generation_share"] for r in records],
            "tokens": [r["completions/mean_length"] * args.prompts * args.generations for r in records],
            "reward": [r["reward"] for r in records],
            "zero_std": [r["frac_reward_zero_std"] for r in records]}


def mean_after_warmup(values):
    rest = values[1:] if len(values) > 1 else values
    return sum(rest) / len(rest)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="drive", choices=["drive", "trl"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    parser.add_argument("--work", default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--result", default=None)
    args = parser.parse_args()
    if args.mode == "trl":
        run_trl(args)
        return 0
    work = args.work or tempfile.mkdtemp(prefix="n3rlhf-grpo-bench-")
    os.makedirs(work, exist_ok=True)
    args.data = os.path.join(work, "prompts.jsonl")
    write_prompts(args.data, args.prompts * (args.iterations + 1))
    results = {}
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results["n3rlhf"] = run_n3rlhf(args, work, skip=True)
        results["n3rlhf, no skip"] = run_n3rlhf(args, work, skip=False)
        trl_result = os.path.join(work, "trl.json")
        subprocess.run([sys.executable, os.path.abspath(__file__), "trl", "--model", args.model, "--prompts", str(args.prompts),
                        "--generations", str(args.generations), "--max-new-tokens", str(args.max_new_tokens),
                        "--iterations", str(args.iterations), "--seed", str(args.seed), "--threads", str(args.threads),
                        "--data", args.data, "--out", os.path.join(work, "trl-out"), "--result", trl_result],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results["trl"] = json.load(open(trl_result))
    print(f"GRPO iteration: {args.model}, {args.prompts} prompts x {args.generations} completions, max_new_tokens "
          f"{args.max_new_tokens}, dapo, 1 optimizer step; mean of iterations 2..{args.iterations} ({args.threads} threads)")
    print(f"{'':16} {'s/iteration':>12} {'generation':>11} {'gen tokens/s':>13} {'mean length':>12} {'reward':>7} "
          f"{'equal-reward groups':>20}")
    summary = {}
    for name in ("n3rlhf", "n3rlhf, no skip", "trl"):
        r = results[name]
        seconds = mean_after_warmup(r["seconds"])
        generation = mean_after_warmup(r["generation_seconds"])
        tokens = mean_after_warmup(r["tokens"]) if r["tokens"] else float("nan")
        reward = sum(r["reward"]) / len(r["reward"]) if r["reward"] else float("nan")
        zero_std = mean_after_warmup(r["zero_std"]) if r.get("zero_std") else float("nan")
        summary[name] = seconds
        print(f"{name:16} {seconds:12.2f} {100 * generation / seconds:10.0f}% {tokens / generation:13.1f} "
              f"{tokens / (args.prompts * args.generations):12.1f} {reward:7.3f} {100 * zero_std:19.0f}%")
    print(f"ratio n3rlhf / TRL (iterations per second): {summary['trl'] / summary['n3rlhf']:.2f}x "
          f"(without the skip: {summary['trl'] / summary['n3rlhf, no skip']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
