// model_config_fuzz.cpp: libFuzzer target for config.json: arbitrary bytes are parsed as JSON and
// read as a Hugging Face model configuration. The only acceptable failures are a JSON parse error
// and ModelError (RLHF030/031); an accepted configuration must round-trip through its JSON form.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "model/model_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json parsed = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return 0;
  n3rlhf::ModelConfig config;
  try {
    config = n3rlhf::parse_model_config(parsed);
  } catch (const n3rlhf::ModelError&) {
    return 0;
  }
  // What we accept we write back, and read again to the same configuration.
  const n3rlhf::ModelConfig again = n3rlhf::parse_model_config(n3rlhf::model_config_to_json(config));
  if (again.vocab_size != config.vocab_size || again.hidden_size != config.hidden_size ||
      again.num_hidden_layers != config.num_hidden_layers || again.model_type != config.model_type) {
    std::abort();
  }
  return 0;
}
