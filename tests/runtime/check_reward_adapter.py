# check_reward_adapter.py: the peer side of reward_adapter_test: transformers builds the reward
# model from the base (AutoModelForSequenceClassification, a new score head) and pip PEFT loads the
# adapter n3rlhf-dist wrote onto it (the score head from the adapter's modules_to_save); its scores
# must equal n3rlhf's, and those of the `n3rlhf merge` output loaded by transformers must equal
# PEFT's. Token 0 pads the rows (right), so it is the pad token here.
# Usage: check_reward_adapter.py BASE ADAPTER OURS.safetensors MERGED; exit 1 on any failure.
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

base_dir, adapter_dir, ours_path, merged_dir = sys.argv[1:5]
ours = load_file(ours_path)
failed = 0


def report(what, error):
    global failed
    ok = error <= 1e-4
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}: max abs error {error:.2e}")


base = AutoModelForSequenceClassification.from_pretrained(base_dir, dtype=torch.float32, num_labels=1)
base.config.pad_token_id = 0
model = PeftModel.from_pretrained(base, adapter_dir).eval()
with torch.no_grad():
    scores = model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits
report("peft loads the n3rlhf reward adapter", (scores - ours["scores"]).abs().max().item())
merged = AutoModelForSequenceClassification.from_pretrained(merged_dir, dtype=torch.float32).eval()
merged.config.pad_token_id = 0
with torch.no_grad():
    merged_scores = merged(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits
report("transformers loads the n3rlhf merge", (merged_scores - scores).abs().max().item())
sys.exit(1 if failed else 0)
