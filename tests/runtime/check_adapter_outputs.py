# check_adapter_outputs.py: the peer side of adapter_training_test: pip PEFT loads each adapter
# directory n3rlhf-dist wrote onto the base model, and (when a merged directory follows it, as
# ADAPTER=MERGED) transformers' logits of the merged model equal PEFT's adapted logits.
# Prints one line per adapter: "<dir> trained=<max |adapted - base|> merged_error=<max abs or ->".
# Usage: check_adapter_outputs.py BASE ADAPTER[=MERGED] ...
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base_dir = sys.argv[1]
ids = torch.tensor([[1, 15, 27, 99, 4, 8, 300, 42, 7, 19]])
with torch.no_grad():
    base_logits = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)(ids).logits
for argument in sys.argv[2:]:
    adapter_dir, _, merged_dir = argument.partition("=")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        adapted = model(ids).logits
        merged_error = "-"
        if merged_dir:
            merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
            merged_error = f"{(merged(ids).logits - adapted).abs().max().item():.3e}"
    print(f"{adapter_dir} trained={(adapted - base_logits).abs().max().item():.3e} merged_error={merged_error}")
