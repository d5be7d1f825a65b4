// step_metrics.hpp: every metric reduction of a training or evaluation pass in one place: the
// objective's loss and metrics averaged over the micro batches of a rank and then over the ranks,
// and the tokens the step trained on summed over the ranks.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "algos/loss_output.hpp"
#include "comm/communicator.hpp"

namespace n3rlhf {

// Each name carries (weighted sum, weight), so that a metric a rank did not see (KTO without
// desirable rows) does not count as zero.
class StepMetrics {
 public:
  explicit StepMetrics(std::vector<std::string> names);

  // One micro batch's output with its share of the step, and the real tokens it held.
  void add(const LossOutput& output, double weight, int64_t tokens = 0);

  // "loss" and every metric some rank saw, averaged over the ranks. A collective: every rank of
  // `communicator` calls it, in the same order.
  std::map<std::string, double> reduce(Communicator& communicator) const;
  // The tokens added on every rank, summed (a training step's; evaluation does not ask). A
  // collective, as reduce().
  double reduce_tokens(Communicator& communicator) const;

 private:
  std::vector<std::string> names_;
  std::vector<double> sums_;     // per name, then the loss last
  std::vector<double> weights_;
  int64_t tokens_ = 0;
};

}  // namespace n3rlhf
