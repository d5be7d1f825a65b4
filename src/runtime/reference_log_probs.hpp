// reference_log_probs.hpp: dpo.precompute_ref_log_probs: the frozen reference model runs once over
// each prepared data set, its summed response log-probs per sequence are stored beside the data
// (io/reference_cache.hpp, columns "chosen" and "rejected" indexed by example), and every later
// step (and every later run on the same data and reference) reads them instead of running the
// reference: one model less in memory and one forward less per step, as TRL's option of the same
// name.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "io/batching.hpp"
#include "io/batching_tensors.hpp"
#include "io/prepared_dataset.hpp"
#include "io/reference_cache.hpp"
#include "model/transformer.hpp"
#include "algos/objective.hpp"

namespace n3rlhf {

// What the cached numbers depend on besides the prepared data: the reference checkpoint (its
// path and the SHA-256 of its config.json and weight files) and the dtype and device kind.
ReferenceCacheIdentity reference_cache_identity(const std::string& reference_directory, torch::ScalarType dtype,
                                                const torch::Device& device);

// The cache for `dataset` (prepared under `prepared_dir`), computing it first when there is
// none for this identity: each rank runs the reference (`load_reference` is called only then,
// so a run that finds its caches never loads a model) over its slice of every example in
// batches of `batch_rows` pairs, rank 0 checks and finalizes, every rank then opens it. A
// collective: every rank calls it. Preference data only (pairs); other data is RLHF002.
std::shared_ptr<const ReferenceCache> ensure_reference_cache(const PreparedDataset& dataset, const std::string& prepared_dir,
                                                             const std::function<const ReferenceModel&()>& load_reference,
                                                             const ReferenceCacheIdentity& identity,
                                                             const CollateOptions& collate, int64_t batch_rows,
                                                             Communicator& communicator, const torch::Device& device);

// Fills tensors.reference_logps for a collated preference batch (chosen rows, then rejected).
void attach_reference_logps(BatchTensors& tensors, const CollatedBatch& batch, const ReferenceCache& cache);

}  // namespace n3rlhf
