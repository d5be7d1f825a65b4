// role_exchange.cpp: broadcasts from each source rank, the packed form of a completion slice,
// and the bucketed weight broadcast.
#include "runtime/role_exchange.hpp"

#include <algorithm>
#include <chrono>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

constexpr double kSliceMagic = 1301.0;  // first element of a packed slice (format 1)

class Reader {
 public:
  explicit Reader(const std::vector<double>& data) : data_(data) {}
  double next() {
    if (at_ >= data_.size()) {
      throw TrainingError(ErrorCode::kDistributedSyncFailure, "a packed completion slice ended early (at element " + std::to_string(at_) + ")",
                          {{"phase", "rollout exchange"}});
    }
    return data_[at_++];
  }
  int64_t count() {
    const double value = next();
    if (value < 0 || value > 1e12 || value != static_cast<double>(static_cast<int64_t>(value))) {
      throw TrainingError(ErrorCode::kDistributedSyncFailure, "a packed completion slice holds a bad count (" + std::to_string(value) + ")",
                          {{"phase", "rollout exchange"}});
    }
    return static_cast<int64_t>(value);
  }
  bool done() const { return at_ == data_.size(); }

 private:
  const std::vector<double>& data_;
  size_t at_ = 0;
};

}  // namespace

std::vector<std::vector<double>> share_from_sources(Communicator& world, const std::vector<int>& sources,
                                                    const std::vector<double>& local, const torch::Device& device) {
  std::vector<std::vector<double>> out;
  const int me = world.rank();
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  for (int source : sources) {
    torch::Tensor size = torch::tensor({source == me ? static_cast<double>(local.size()) : 0.0}, options).to(device);
    BroadcastOptions broadcast;
    broadcast.root = source;
    if (world.size() > 1) world.broadcast(size, broadcast)->wait();
    const int64_t n = static_cast<int64_t>(size.item<double>());
    torch::Tensor data = source == me ? torch::tensor(local, options).to(device) : torch::empty({n}, options.device(device));
    if (world.size() > 1 && n > 0) world.broadcast(data, broadcast)->wait();
    const torch::Tensor host = data.to(torch::kCPU).contiguous();
    out.emplace_back(host.data_ptr<double>(), host.data_ptr<double>() + n);
  }
  return out;
}

std::vector<double> pack_completions(const CompletionSlice& slice) {
  std::vector<double> out = {kSliceMagic, static_cast<double>(slice.weight_version), static_cast<double>(slice.prompts.size())};
  out.insert(out.end(), slice.prompts.begin(), slice.prompts.end());
  const SamplerStats& s = slice.sampling;
  out.insert(out.end(), {static_cast<double>(s.prefill_tokens), static_cast<double>(s.decode_rows), static_cast<double>(s.generated_tokens),
                         static_cast<double>(s.admissions), s.seconds, static_cast<double>(slice.completions.size())});
  for (const SampledCompletion& c : slice.completions) {
    out.insert(out.end(), {static_cast<double>(c.request), static_cast<double>(c.sample), static_cast<double>(c.tokens.size()),
                           c.eos ? 1.0 : 0.0, c.stopped ? 1.0 : 0.0, c.entropy_sum});
    out.insert(out.end(), c.tokens.begin(), c.tokens.end());
    out.insert(out.end(), c.log_probs.begin(), c.log_probs.end());
  }
  return out;
}

CompletionSlice unpack_completions(const std::vector<double>& packed) {
  Reader in(packed);
  if (in.next() != kSliceMagic) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure, "a rollout rank sent something that is not a packed completion slice",
                        {{"phase", "rollout exchange"}});
  }
  CompletionSlice slice;
  slice.weight_version = in.count();
  const int64_t prompts = in.count();
  for (int64_t i = 0; i < prompts; ++i) slice.prompts.push_back(in.count());
  SamplerStats& s = slice.sampling;
  s.prefill_tokens = in.count();
  s.decode_rows = in.count();
  s.generated_tokens = in.count();
  s.admissions = in.count();
  s.seconds = in.next();
  const int64_t completions = in.count();
  for (int64_t i = 0; i < completions; ++i) {
    SampledCompletion c;
    c.request = in.count();
    c.sample = in.count();
    const int64_t tokens = in.count();
    c.eos = in.next() != 0.0;
    c.stopped = in.next() != 0.0;
    c.entropy_sum = in.next();
    for (int64_t t = 0; t < tokens; ++t) c.tokens.push_back(in.count());
    for (int64_t t = 0; t < tokens; ++t) c.log_probs.push_back(static_cast<float>(in.next()));
    if (c.request >= prompts) {
      throw TrainingError(ErrorCode::kDistributedSyncFailure, "a packed completion names prompt " + std::to_string(c.request) + " of " +
                                                                  std::to_string(prompts), {{"phase", "rollout exchange"}});
    }
    slice.completions.push_back(std::move(c));
  }
  if (!in.done()) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure, "a packed completion slice has data past its end", {{"phase", "rollout exchange"}});
  }
  return slice;
}

CompletionSlice concatenate_slices(const std::vector<CompletionSlice>& slices) {
  CompletionSlice out;
  out.weight_version = slices.empty() ? 0 : slices.front().weight_version;
  for (const CompletionSlice& slice : slices) {
    const int64_t offset = static_cast<int64_t>(out.prompts.size());
    out.prompts.insert(out.prompts.end(), slice.prompts.begin(), slice.prompts.end());
    for (SampledCompletion c : slice.completions) {
      c.request += offset;
      out.completions.push_back(std::move(c));
    }
    out.sampling.prefill_tokens += slice.sampling.prefill_tokens;
    out.sampling.decode_rows += slice.sampling.decode_rows;
    out.sampling.generated_tokens += slice.sampling.generated_tokens;
    out.sampling.admissions += slice.sampling.admissions;
    out.sampling.seconds = std::max(out.sampling.seconds, slice.sampling.seconds);
    out.weight_version = std::min(out.weight_version, slice.weight_version);
  }
  return out;
}

WeightSyncStats broadcast_tensors(Communicator& group, const std::vector<torch::Tensor>& tensors, const WeightSyncOptions& options) {
  torch::NoGradGuard no_grad;
  const auto started = std::chrono::steady_clock::now();
  WeightSyncStats stats;
  const bool lead = group.rank() == 0;
  size_t first = 0;
  while (first < tensors.size()) {
    // A bucket: tensors of one dtype while they fit (at least one).
    const torch::ScalarType dtype = tensors[first].scalar_type();
    const int64_t bucket_elements = std::max<int64_t>(1, options.bucket_bytes / static_cast<int64_t>(torch::elementSize(dtype)));
    size_t last = first;
    int64_t elements = 0;
    while (last < tensors.size() && tensors[last].scalar_type() == dtype &&
           (last == first || elements + tensors[last].numel() <= bucket_elements)) {
      elements += tensors[last].numel();
      ++last;
    }
    torch::Tensor bucket = torch::empty({elements}, torch::TensorOptions().dtype(dtype).device(options.device));
    if (lead) {
      int64_t at = 0;
      for (size_t i = first; i < last; ++i) {
        bucket.narrow(0, at, tensors[i].numel()).copy_(tensors[i].reshape({-1}));
        at += tensors[i].numel();
      }
    }
    BroadcastOptions broadcast;
    broadcast.root = 0;
    group.broadcast(bucket, broadcast)->wait();
    if (!lead) {
      int64_t at = 0;
      for (size_t i = first; i < last; ++i) {
        torch::Tensor target = tensors[i];
        target.copy_(bucket.narrow(0, at, target.numel()).view(target.sizes()));
        at += target.numel();
      }
    }
    stats.bytes += static_cast<double>(elements) * static_cast<double>(torch::elementSize(dtype));
    ++stats.buckets;
    first = last;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return stats;
}

}  // namespace n3rlhf
