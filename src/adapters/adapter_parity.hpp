// adapter_parity.hpp: the adapters suite of `n3rlhf parity DIR`: every PEFT adapter fixture under
// DIR/adapters/<name> (adapter_config.json, adapter_model.safetensors, expected.safetensors with
// input_ids, attention_mask and PEFT's adapted logits) loaded onto its base model from
// DIR/models and compared to 1e-4, plus the logits of the merged base when merging applies.
#pragma once

#include "model/parity.hpp"

namespace n3rlhf {

// The base of adapters/<name>: fixture.json's "base" when present, else the longest name under
// DIR/models that <name> starts with ("llama_tiny_lora" -> "llama_tiny").
ParitySuite adapter_parity_suite();

}  // namespace n3rlhf
