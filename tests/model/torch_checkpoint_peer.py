# torch_checkpoint_peer.py: pytorch_model.bin checkpoints for torch_checkpoint_test, written by
# pip torch and read back by pip transformers (the peer):
#   OUT/bin         the classifier fixture as transformers 4 saved it with safe_serialization=False
#                   (torch.save of the state dict, an OrderedDict with _metadata), with its
#                   config and tokenizer; expected.json: transformers' logits of the fixture's
#                   texts, from a model loaded from this directory
#   OUT/sharded     the same weights in two plain-dict shards in float16 with
#                   pytorch_model.bin.index.json, and transformers' logits of those
#   OUT/llama       the causal fixture llama_tiny as pytorch_model.bin
#   OUT/legacy      pytorch_model.bin in the pre-1.6 pickle format (_use_new_zipfile_serialization=False)
#   OUT/truncated   pytorch_model.bin cut to half its bytes
# Usage: python torch_checkpoint_peer.py FIXTURES_HF OUT
import json, os, shutil, sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

fixtures, out = sys.argv[1], sys.argv[2]
source = os.path.join(fixtures, "classifiers", "bert_toxic_trigger")
texts = json.load(open(os.path.join(source, "expected.json")))["texts"]


def copy_side_files(src, dst):
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(src):
        if not name.endswith(".safetensors") and name != "expected.json":
            shutil.copy(os.path.join(src, name), dst)


def logits_of(directory):
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    assert not any(n.endswith(".safetensors") for n in os.listdir(directory)), "the peer must read the .bin"
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return model(**batch).logits.float().tolist()


model = AutoModelForSequenceClassification.from_pretrained(source).eval()
state = model.state_dict()
assert hasattr(state, "_metadata")

directory = os.path.join(out, "bin")
copy_side_files(source, directory)
torch.save(state, os.path.join(directory, "pytorch_model.bin"))
json.dump({"texts": texts, "logits": logits_of(directory)}, open(os.path.join(directory, "expected.json"), "w"))

directory = os.path.join(out, "sharded")
copy_side_files(source, directory)
names = list(state.keys())
half = len(names) // 2
weight_map = {}
for index, part in enumerate([names[:half], names[half:]]):
    file = "pytorch_model-%05d-of-00002.bin" % (index + 1)
    torch.save({name: state[name].half() for name in part}, os.path.join(directory, file))
    weight_map.update({name: file for name in part})
json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(directory, "pytorch_model.bin.index.json"), "w"))
json.dump({"texts": texts, "logits": logits_of(directory)}, open(os.path.join(directory, "expected.json"), "w"))

directory = os.path.join(out, "llama")
copy_side_files(os.path.join(fixtures, "models", "llama_tiny"), directory)
from safetensors.torch import load_file
torch.save(load_file(os.path.join(fixtures, "models", "llama_tiny", "model.safetensors")), os.path.join(directory, "pytorch_model.bin"))

directory = os.path.join(out, "legacy")
copy_side_files(source, directory)
torch.save(state, os.path.join(directory, "pytorch_model.bin"), _use_new_zipfile_serialization=False)

directory = os.path.join(out, "truncated")
copy_side_files(source, directory)
data = open(os.path.join(out, "bin", "pytorch_model.bin"), "rb").read()
open(os.path.join(directory, "pytorch_model.bin"), "wb").write(data[: len(data) // 2])
print("written")
