// hub_cache.hpp: models named by Hugging Face Hub id ("org/name", "org/name@revision") found in
// the local hub cache that huggingface_hub writes (models--org--name/refs/<ref> holding a commit
// hash, snapshots/<hash>/ holding the files), offline: n3rlhf never downloads a model.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/config.hpp"

namespace n3rlhf {

struct HubModelId {
  std::string repo_id;   // "org/name"
  std::string revision;  // a ref ("main", a branch or tag) or a commit hash; "main" when not given
};

// "org/name" or "org/name@rev" (names of letters, digits, '-', '_', '.'); nullopt otherwise
// (absolute or ./ paths, object-store URIs, more than one '/').
std::optional<HubModelId> parse_hub_model_id(std::string_view text);

// The hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub.
std::string hub_cache_directory();

// `name_or_path` itself when it exists on disk; else, for a Hub id, its snapshot directory in the
// hub cache (the revision a ref or a full commit hash). ModelError RLHF030 when it is neither,
// naming the cache directory searched and the `huggingface-cli download` command that fills it.
std::string resolve_model_path(const std::string& name_or_path);

// resolve_model_path() on the job's models: base_model, tokenizer, reference_model, reward_model
// (empty ones are left alone).
void resolve_model_paths(RLHFConfig& config);

}  // namespace n3rlhf
