// hub_cache_layout.hpp: lays out a Hugging Face hub cache the way huggingface_hub writes one
// (models--org--name/blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
// refs/<ref> holding the commit), for tests of models named by Hub id.
#pragma once

#include <map>
#include <string>

namespace n3rlhf::testing {

// Copies `files` (name in the repository -> source path) into <cache>/models--org--name as the
// snapshot `commit` and points refs/<ref> at it. Returns the snapshot directory.
std::string lay_out_hub_snapshot(const std::string& cache, const std::string& repo_id, const std::string& commit,
                                 const std::map<std::string, std::string>& files, const std::string& ref = "main");

}  // namespace n3rlhf::testing
