// layer_executor.hpp: the hook through which a model runs each of its layers, so that a
// sharding strategy (FSDP) can gather a layer's parameters just before it runs and free them
// after, without the model knowing about communication.
#pragma once

#include <functional>

#include <torch/torch.h>

namespace n3rlhf {

class LayerExecutor {
 public:
  virtual ~LayerExecutor() = default;
  // Runs layer `index` (the closure) on `hidden` and returns its output.
  virtual torch::Tensor run_layer(int index, const std::function<torch::Tensor(const torch::Tensor&)>& layer,
                                  const torch::Tensor& hidden) = 0;
};

}  // namespace n3rlhf
