// role_exchange.hpp: what the ranks of a split layout hand each other within an online
// iteration: the policy's weights to the rollout ranks (in buckets), the rollout ranks'
// completions, the reward ranks' scores and the reference ranks' log-probs. Each exchange is a
// sequence of broadcasts over the world, one per rank that holds a part, so every rank takes
// part in every exchange in the same order and ends with the whole (a few kB per iteration
// besides the weights).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "comm/communicator.hpp"
#include "model/rollout_sampler.hpp"

namespace n3rlhf {

// Completions of a run of consecutive prompts, as one rollout rank generated them.
struct CompletionSlice {
  std::vector<int64_t> prompts;                // indices into the prompt set
  std::vector<SampledCompletion> completions;  // group-major; `request` indexes `prompts`
  SamplerStats sampling;
  int64_t weight_version = 0;                  // the policy update the weights came from
};

// Each source rank's float64 vector, in `sources` order, on every rank of `world` (`local` is
// read on the source ranks only). Tensors travel on `device` (CUDA for NCCL). A collective.
std::vector<std::vector<double>> share_from_sources(Communicator& world, const std::vector<int>& sources,
                                                    const std::vector<double>& local, const torch::Device& device);

std::vector<double> pack_completions(const CompletionSlice& slice);
// RLHF014 for a vector that is not a packed slice (a peer on another build).
CompletionSlice unpack_completions(const std::vector<double>& packed);
// Slices one after the other (prompt order), `request` renumbered; sampler counts summed, the
// seconds the longest (the rollout ranks run side by side); the weight version the oldest.
CompletionSlice concatenate_slices(const std::vector<CompletionSlice>& slices);

struct WeightSyncOptions {
  int64_t bucket_bytes = 64ll << 20;
  torch::Device device = torch::kCPU;
};
struct WeightSyncStats {
  double bytes = 0.0;  // payload received by each rollout rank
  double seconds = 0.0;
  int64_t buckets = 0;
};
// Policy lead -> rollout ranks over `group` (the weight-sync group, lead at rank 0): the lead
// sends `tensors`, the others copy what arrives into theirs (same shapes and order, e.g. the
// trainable parameters of the same model). Buckets of about bucket_bytes, one dtype each (a
// tensor larger than a bucket gets one of its own). A collective over `group`.
WeightSyncStats broadcast_tensors(Communicator& group, const std::vector<torch::Tensor>& tensors, const WeightSyncOptions& options);

}  // namespace n3rlhf
