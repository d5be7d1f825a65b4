# check_saved_models.py: the peer side of PretrainedPeer.TransformersLoadsWhatWeSave. For each
# directory written by n3rlhf's save_pretrained, loads it with transformers' Auto classes (as a
# user would), recomputes the outputs on the inputs stored in n3rlhf_outputs.safetensors and
# compares them with n3rlhf's (max abs error <= 1e-4). Also loads the copied tokenizer.json.
import json, os, sys
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

TOLERANCE = 1e-4
passed = failed = 0
for directory in sys.argv[1:]:
    name = os.path.basename(directory)
    try:
        config = json.load(open(os.path.join(directory, "config.json")))
        classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures", []))
        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        model = auto.from_pretrained(directory, dtype=torch.float32).eval()
        ours = load_file(os.path.join(directory, "n3rlhf_outputs.safetensors"))
        with torch.no_grad():
            theirs = model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).logits.float()
        error = (theirs - ours["outputs"]).abs().max().item()
        Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        ok = error <= TOLERANCE
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {type(model).__name__} max abs error {error:.3g} (tolerance {TOLERANCE:g})")
    except Exception as exc:  # report every directory, then fail
        ok = False
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
    passed += ok
    failed += not ok
print(f"{passed} passed, {failed} failed")
sys.exit(0 if failed == 0 else 1)
