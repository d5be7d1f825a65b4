# adapters_peer.py: the peer side of adapters_peer_test: pip peft loads each adapter that n3rlhf
# saved and must give n3rlhf's logits; transformers loads each `n3rlhf merge` output and must give
# PEFT's adapted logits (a reward model's scores for "classifier" cases). Usage: adapters_peer.py
# CASES_JSON; prints one line per check, exit 1 on any failure.
import json, sys, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from peft import PeftModel

cases = json.load(open(sys.argv[1]))
failed = 0
for case in cases:
    ours = load_file(case["ours"])
    auto = AutoModelForSequenceClassification if case.get("classifier") else AutoModelForCausalLM
    base = auto.from_pretrained(case["base"], dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(base, case["adapter"]).eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=ours["input_ids"]).logits
    error = (adapted - ours["logits"]).abs().max().item()
    ok = error <= 1e-4
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {case['name']}: peft loads the n3rlhf adapter, max abs error {error:.2e}")
    if case.get("merged"):
        merged = auto.from_pretrained(case["merged"], dtype=torch.float32).eval()
        with torch.no_grad():
            merged_logits = merged(input_ids=ours["input_ids"]).logits
        error = (merged_logits - adapted).abs().max().item()
        ok = error <= 1e-4
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case['name']}: transformers loads the n3rlhf merge, max abs error {error:.2e} against peft")
sys.exit(1 if failed else 0)
