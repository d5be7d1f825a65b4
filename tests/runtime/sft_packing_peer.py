"""sft_packing_peer.py: TRL's SFTTrainer with packing=True (best-fit decreasing, padding-free
position ids) on a JSONL of text rows, the fixture Llama and tokenizer: prints as JSON the number of
packed rows TRL made and the loss of one batch holding all of them, as SFTTrainer.compute_loss
computes it before any update. sft_packing_test compares it with n3rlhf's first packed step.

usage: sft_packing_peer.py DATA.jsonl TOKENIZER.json MODEL_DIR MAX_LENGTH WORK_DIR
"""
import json
import os
import shutil
import sys

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer


def tokenizer_directory(tokenizer_json, work):
    # The bare fixture tokenizer.json plus the special tokens n3rlhf finds by name.
    directory = os.path.join(work, "tokenizer")
    os.makedirs(directory, exist_ok=True)
    shutil.copy(tokenizer_json, os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                   "eos_token": "<|end_of_text|>", "pad_token": "<|end_of_text|>"}, f)
    return directory


def main():
    data, tokenizer_json, model_dir, max_length, work = sys.argv[1:6]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_directory(tokenizer_json, work))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    with open(data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    args = SFTConfig(output_dir=os.path.join(work, "trl"), packing=True, packing_strategy="bfd", max_length=int(max_length),
                     per_device_train_batch_size=len(rows), report_to=[], use_cpu=True, dataset_num_proc=None,
                     shuffle_dataset=False, seed=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "position_ids" in batch and batch["input_ids"].size(0) == 1, "TRL should flatten the packed batch (padding-free)"
    items = int((batch["labels"] != -100).sum())
    model.eval()  # no dropout; n3rlhf's step has none either
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(items))
    print(json.dumps({"rows": len(trainer.train_dataset), "loss": float(loss), "loss_tokens": items}))


if __name__ == "__main__":
    main()
