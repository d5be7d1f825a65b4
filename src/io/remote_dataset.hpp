// remote_dataset.hpp: data sets in object stores (dataset: "s3://bucket/pairs.jsonl", or the
// prefix of a prepared directory) copied into a local cache before they are prepared as usual.
#pragma once

#include <string>

namespace n3rlhf {

// The local cache of remote data: $N3RLHF_CACHE_DIR, else $XDG_CACHE_HOME/n3rlhf, else
// ~/.cache/n3rlhf. Jobs on several nodes need it on a shared file system (as data.prepared_dir).
std::string remote_data_cache_directory();

// Where the copy of `uri` lives: <cache>/objects/<scheme>/<bucket>/<key>. Deterministic, so
// that every rank knows it without asking.
std::string remote_data_local_path(const std::string& uri);

// Copies `uri` into remote_data_local_path(uri) unless the copy there is of the same object
// (same ETag), and returns that path. A URI naming no object but a prefix holding manifest.json
// (a prepared directory) is copied whole. DatasetError RLHF020 when there is neither; RLHF050
// when the store fails.
std::string fetch_remote_dataset(const std::string& uri);

}  // namespace n3rlhf
