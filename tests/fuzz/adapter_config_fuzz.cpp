// adapter_config_fuzz.cpp: libFuzzer target for PEFT's adapter_config.json: arbitrary JSON read
// as an adapter configuration; the only acceptable failures are the typed RLHF errors and
// nlohmann's type errors (which read_adapter_config turns into RLHF013). An accepted
// configuration is written back and read again.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "adapters/adapter_config.hpp"
#include "core/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json parsed = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return 0;
  try {
    const n3rlhf::AdapterConfig config = n3rlhf::adapter_config_from_json(parsed, "fuzz/adapter_config.json");
    (void)n3rlhf::adapter_config_from_json(n3rlhf::adapter_config_to_json(config), "fuzz/again.json");
  } catch (const n3rlhf::RlhfError&) {
  } catch (const nlohmann::json::exception&) {
  }
  return 0;
}
