// loss_output.hpp: LossOutput, what every loss of src/algos returns: the differentiable scalar
// loss and the metrics TRL reports for it, under TRL's names, as detached 0-dim tensors.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace n3rlhf {

struct LossOutput {
  torch::Tensor loss;  // 0-dim, float32, differentiable with respect to the inputs that need grad
  // Insertion-ordered (name, 0-dim float32 tensor). Tensors, not doubles, so that a trainer on a
  // GPU reads them (one device-to-host copy) only at the steps it logs.
  std::vector<std::pair<std::string, torch::Tensor>> metrics;

  void add_metric(std::string name, const torch::Tensor& value);
  bool has_metric(std::string_view name) const;
  // The metric's value; RLHF041 when the loss reported no metric of that name.
  double metric(std::string_view name) const;
  // Every metric as (name, value), in the order the loss added them.
  std::vector<std::pair<std::string, double>> metric_values() const;
};

}  // namespace n3rlhf
