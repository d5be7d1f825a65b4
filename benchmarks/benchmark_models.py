# benchmark_models.py: the Llama shapes of `n3rlhf init-model`'s presets (which
# benchmark_models.hpp reads) for the Python peers, and a builder of the same randomly
# initialised transformers LlamaForCausalLM.
import torch
from transformers import LlamaConfig, LlamaForCausalLM

# name: (hidden, layers, heads, kv_heads, intermediate, vocab)
SHAPES = {"tinyllama-1.1b": (2048, 22, 32, 4, 5632, 32000), "llama-100m": (768, 12, 12, 4, 2048, 32000),
          "small": (512, 6, 8, 4, 1376, 2048), "tiny": (128, 4, 4, 2, 352, 2048)}


def build_llama(name, device="cpu"):
    hidden, layers, heads, kv, inter, vocab = SHAPES[name]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="sdpa")
    return LlamaForCausalLM(config).to(device)
