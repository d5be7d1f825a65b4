// loss_output.cpp: LossOutput's metric bookkeeping.
#include "algos/loss_output.hpp"

#include "core/error.hpp"

namespace n3rlhf {

void LossOutput::add_metric(std::string name, const torch::Tensor& value) {
  metrics.emplace_back(std::move(name), value.detach().to(torch::kFloat32).reshape({}));
}

bool LossOutput::has_metric(std::string_view name) const {
  for (const auto& [key, value] : metrics)
    if (key == name) return true;
  return false;
}

double LossOutput::metric(std::string_view name) const {
  for (const auto& [key, value] : metrics)
    if (key == name) return value.item<double>();
  std::string known;
  for (const auto& [key, value] : metrics) known += (known.empty() ? "" : ", ") + key;
  throw EvaluationError(ErrorCode::kMetricComputationFailure, "the loss reported no metric named '" +
                            std::string(name) + "'",
                        {{"metric", std::string(name)}, {"reported", known}});
}

std::vector<std::pair<std::string, double>> LossOutput::metric_values() const {
  std::vector<std::pair<std::string, double>> values;
  values.reserve(metrics.size());
  for (const auto& [key, value] : metrics) values.emplace_back(key, value.item<double>());
  return values;
}

}  // namespace n3rlhf
