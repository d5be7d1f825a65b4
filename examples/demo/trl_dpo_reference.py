# trl_dpo_reference.py: the demo's DPO job (examples/demo/dpo.n3) run by the peer, pip TRL's
# DPOTrainer, on the same model directory and data: shows that the demo's preference is learnable
# by the tiny model on CPU, and what held-out reward accuracy to expect, per task and per kind of
# flaw. Not a test (it takes minutes); docs/demo.md quotes its output. Defaults are dpo.n3's.
#
#   build/bin/n3rlhf init-model --preset tiny-llama --tokenizer assets/tokenizers/n3-demo-bpe --out runs/demo/model
#   build/bin/n3rlhf demo-data --out runs/demo/data
#   .venv/bin/python examples/demo/trl_dpo_reference.py --model runs/demo/model --data runs/demo/data --steps 300
import argparse
import collections
import json
import os
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def sequence_log_probs(model, tokenizer, prompts, responses, max_length):
    # Sum of log p(response tokens | prompt) as TRL computes it: prompt with BOS, response + EOS.
    totals = []
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(prompt)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + response_ids)[:max_length]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        log_probs = logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        totals.append(log_probs[len(prompt_ids) - 1:].sum().item())
    return torch.tensor(totals)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--scheduler", default="cosine", help="constant, linear or cosine (dpo.n3: cosine)")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/n3rlhf-trl-demo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    columns = ("prompt", "chosen", "rejected")
    train_rows = read_rows(os.path.join(args.data, "train.jsonl"))
    eval_rows = read_rows(os.path.join(args.data, "eval.jsonl"))
    train = Dataset.from_list([{k: r[k] for k in columns} for r in train_rows])
    evaluation = Dataset.from_list([{k: r[k] for k in columns} for r in eval_rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    # bf16=False: DPOConfig defaults to bf16, which on the CPU is bfloat16 autocast; n3rlhf trains
    # the demo in float32.
    config = DPOConfig(output_dir=args.out, bf16=False, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
                       learning_rate=args.learning_rate, lr_scheduler_type=args.scheduler,
                       warmup_steps=args.warmup_steps, max_steps=args.steps,
                       beta=args.beta, max_length=args.max_length, eval_strategy="steps", eval_steps=args.eval_every,
                       logging_steps=args.eval_every, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                       dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, ref_model=reference, args=config, train_dataset=train, eval_dataset=evaluation,
                         processing_class=tokenizer)
    started = time.time()
    trainer.train()
    elapsed = time.time() - started
    print("step  eval_loss  eval_rewards/accuracies  eval_rewards/margins")
    for record in trainer.state.log_history:
        if "eval_loss" in record:
            print(f"{record['step']:4d}  {record['eval_loss']:.4f}     {record['eval_rewards/accuracies']:.3f}"
                  f"                    {record['eval_rewards/margins']:.3f}")
    print(f"trained {args.steps} steps in {elapsed:.0f} s ({args.threads} threads)")

    # Held-out accuracy of the implicit reward per task and per flaw.
    model.eval()
    prompts = [r["prompt"] for r in eval_rows]
    margins = []
    for key in ("chosen", "rejected"):
        responses = [r[key] for r in eval_rows]
        policy = sequence_log_probs(model, tokenizer, prompts, responses, args.max_length)
        ref = sequence_log_probs(reference, tokenizer, prompts, responses, args.max_length)
        margins.append(policy - ref)
    correct = (margins[0] > margins[1]).tolist()
    groups = collections.defaultdict(list)
    for row, ok in zip(eval_rows, correct):
        groups["all"].append(ok)
        groups["task=" + row["task"]].append(ok)
        groups["flaw=" + row["flaw"]].append(ok)
    for name in sorted(groups):
        print(f"{name:32s} accuracy {sum(groups[name]) / len(groups[name]):.3f} ({len(groups[name])} pairs)")


if __name__ == "__main__":
    main()
