// step_metrics.cpp: weighted sums packed into one float32 tensor (sums, then weights) for one
// all-reduce; the token count in a second one.
#include "runtime/step_metrics.hpp"

#include <torch/torch.h>

namespace n3rlhf {

StepMetrics::StepMetrics(std::vector<std::string> names) : names_(std::move(names)) {
  sums_.assign(names_.size() + 1, 0.0);
  weights_.assign(names_.size() + 1, 0.0);
}

void StepMetrics::add(const LossOutput& output, double weight, int64_t tokens) {
  sums_.back() += output.loss.detach().item<double>() * weight;
  weights_.back() += weight;
  for (size_t i = 0; i < names_.size(); ++i) {
    if (!output.has_metric(names_[i])) continue;
    sums_[i] += output.metric(names_[i]) * weight;
    weights_[i] += weight;
  }
  tokens_ += tokens;
}

std::map<std::string, double> StepMetrics::reduce(Communicator& communicator) const {
  torch::Tensor packed = torch::tensor(sums_, torch::kFloat64);
  torch::Tensor weights = torch::tensor(weights_, torch::kFloat64);
  torch::Tensor both = torch::cat({packed, weights}).to(torch::kFloat32).contiguous();
  if (communicator.size() > 1) communicator.all_reduce(both)->wait();
  const int64_t n = static_cast<int64_t>(sums_.size());
  std::map<std::string, double> values;
  for (int64_t i = 0; i < n; ++i) {
    const double weight = both[n + i].item<double>();
    if (weight <= 0.0) continue;
    values[i + 1 == n ? "loss" : names_[static_cast<size_t>(i)]] = both[i].item<double>() / weight;
  }
  return values;
}

double StepMetrics::reduce_tokens(Communicator& communicator) const {
  torch::Tensor tokens = torch::tensor({static_cast<float>(tokens_)});
  if (communicator.size() > 1) communicator.all_reduce(tokens)->wait();
  return tokens.item<double>();
}

}  // namespace n3rlhf
