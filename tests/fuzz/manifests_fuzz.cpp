// manifests_fuzz.cpp: libFuzzer target for the manifests n3rlhf reads back: a training
// checkpoint's manifest.json and a prepared data set's manifest. A rejected checkpoint manifest
// is a reason string, a rejected data manifest DatasetError; an accepted checkpoint manifest
// names only paths inside the checkpoint.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "io/checkpoint_directory.hpp"
#include "io/prepare_manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  n3rlhf::CheckpointManifest manifest;
  if (!n3rlhf::parse_checkpoint_manifest(text, &manifest)) {
    for (const n3rlhf::CheckpointFileEntry& file : manifest.files) {
      if (file.path.empty() || file.path[0] == '/' || file.path.find("..") == 0) std::abort();
    }
  }
  const nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) {
    try {
      (void)n3rlhf::PreparedManifest::from_json(parsed, "fuzz/manifest.json");
    } catch (const n3rlhf::RlhfError&) {
      // Expected: RLHF024 naming the file.
    }
  }
  return 0;
}
