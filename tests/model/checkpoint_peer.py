# checkpoint_peer.py: the peer half of CheckpointPeer (checkpoint_test.cpp). Reads a sharded
# checkpoint written by n3rlhf with pip safetensors through its index, loads n3rlhf's sharded
# rewrite of a fixture model with transformers and compares its logits with the original, and
# writes the same model with save_pretrained for a byte-for-byte comparison. Prints nothing;
# writes its findings as JSON.
import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    mixed_dir, ours_dir, fixture_dir, theirs_dir, max_shard_size, result_path = sys.argv[1:7]
    result = {}

    with open(os.path.join(mixed_dir, "model.safetensors.index.json"), encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    mixed = {}
    for shard in sorted(set(weight_map.values())):
        for name, tensor in load_file(os.path.join(mixed_dir, shard)).items():
            if weight_map.get(name) != shard:
                raise SystemExit(f"{name} is in {shard} but the index says {weight_map.get(name)}")
            mixed[name] = {
                "dtype": {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}[tensor.dtype],
                "shape": list(tensor.shape),
                "values": tensor.double().flatten().tolist(),
            }
    if set(mixed) != set(weight_map):
        raise SystemExit("the shards and the index disagree on the tensor names")
    result["mixed"] = mixed

    reference = AutoModelForCausalLM.from_pretrained(fixture_dir).eval()
    ours, info = AutoModelForCausalLM.from_pretrained(ours_dir, output_loading_info=True)
    ours.eval()
    result["missing_keys"] = sorted(info["missing_keys"])
    result["unexpected_keys"] = sorted(info["unexpected_keys"])
    with open(os.path.join(ours_dir, "model.safetensors.index.json"), encoding="utf-8") as f:
        result["shard_count"] = len(set(json.load(f)["weight_map"].values()))
    input_ids = (torch.arange(24).reshape(2, 12) * 37) % reference.config.vocab_size
    with torch.no_grad():
        diff = (ours(input_ids).logits - reference(input_ids).logits).abs().max().item()
    result["logits_max_abs_diff"] = diff

    reference.save_pretrained(theirs_dir, max_shard_size=int(max_shard_size))

    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
