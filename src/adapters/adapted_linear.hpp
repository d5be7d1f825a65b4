// adapted_linear.hpp: the forward overrides installed on an AdaptableLinear: LoRA (and DoRA),
// IA3 and AdaLoRA's SVD form, each computing what PEFT 0.21's layer computes, over a frozen base
// behind the BaseLinear interface (a plain weight, or a quantized one for QLoRA).
//
// Adapter tensors are registered on the adapted layer under PEFT's names, so the model's
// parameter names are PEFT's keys without "base_model.model.":
//   LoRA     <layer>.lora_A.weight [r, in], <layer>.lora_B.weight [out, r]
//   DoRA     the LoRA pair and <layer>.lora_magnitude_vector [out]
//   IA3      <layer>.ia3_l [out, 1], or [1, in] on a feed-forward layer (its input is scaled)
//   AdaLoRA  <layer>.lora_A [r, in], <layer>.lora_E [r, 1], <layer>.lora_B [out, r]
// Adapter tensors live on the base's device, in float32 when the base is float16/bfloat16 (as
// PEFT's autocast_adapter_dtype does) and in the base's dtype otherwise.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "model/adaptable_linear.hpp"

namespace n3rlhf {

// The frozen x W^T + b under an adapter. QLoRA plugs a quantized weight in here.
class BaseLinear {
 public:
  virtual ~BaseLinear() = default;
  virtual torch::Tensor forward(const torch::Tensor& input) = 0;
  // W as a dense [out, in] tensor (dequantized for a quantized base): DoRA's norm and merging.
  virtual torch::Tensor dense_weight() = 0;
  virtual torch::Tensor bias() = 0;  // undefined when the layer has none
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // Where and in which dtype the layer computes.
  virtual torch::Device device() const = 0;
  virtual torch::ScalarType compute_dtype() const = 0;
};

// The layer's own weight and bias (the usual case).
class DenseBaseLinear : public BaseLinear {
 public:
  explicit DenseBaseLinear(AdaptableLinearImpl& layer) : layer_(layer) {}
  torch::Tensor forward(const torch::Tensor& input) override { return layer_.base_forward(input); }
  torch::Tensor dense_weight() override { return layer_.weight; }
  torch::Tensor bias() override { return layer_.bias; }
  int64_t in_features() const override { return layer_.options.in_features(); }
  int64_t out_features() const override { return layer_.options.out_features(); }
  torch::Device device() const override { return layer_.weight.device(); }
  torch::ScalarType compute_dtype() const override { return layer_.weight.scalar_type(); }

 private:
  AdaptableLinearImpl& layer_;
};

// Shared by every layer of one AdapterSet: false runs the bare base (AdapterDisabledGuard).
struct AdapterSwitch {
  bool enabled = true;
};

// A weight and bias with an adapter folded in (bias undefined when the layer has none).
struct MergedLinear {
  torch::Tensor weight;
  torch::Tensor bias;
};

class AdaptedLinear : public LinearForwardOverride {
 public:
  AdaptedLinear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
                std::shared_ptr<const AdapterSwitch> adapter_switch);

  torch::Tensor forward(const torch::Tensor& input) final;

  const std::string& module_path() const { return module_path_; }
  AdaptableLinearImpl& layer() { return layer_; }
  BaseLinear& base() { return *base_; }
  // This adapter's tensors by their names under the layer ("lora_A.weight", "ia3_l"), in the
  // order PEFT registers them.
  virtual std::vector<std::pair<std::string, torch::Tensor>> adapter_parameters() const = 0;
  // What PEFT's merge() writes into the base layer.
  virtual MergedLinear merged() = 0;

 protected:
  virtual torch::Tensor adapted_forward(const torch::Tensor& input) = 0;
  // float32 for a half-precision base, else the base's dtype.
  torch::TensorOptions adapter_options() const;
  // Registers `value` on the layer as `name`; "lora_A.weight" goes into a child module "lora_A".
  torch::Tensor register_on_layer(const std::string& name, torch::Tensor value, bool trainable);

  std::string module_path_;
  AdaptableLinearImpl& layer_;
  std::shared_ptr<BaseLinear> base_;
  std::shared_ptr<const AdapterSwitch> switch_;
};

// LoRA: base(x) + B(A(dropout(x))) * scaling. With DoRA, PEFT's magnitude/direction form with
// the column norm ||W + scaling B A|| detached from the graph (DoRA paper, section 4.3).
class LoraLinear : public AdaptedLinear {
 public:
  struct Options {
    int64_t rank = 8;
    double scaling = 1.0;
    double dropout = 0.0;
    bool dora = false;
    bool trainable = true;
  };
  // PEFT's default init: A kaiming-uniform (a = sqrt(5)) from `generator`, B zeros; DoRA's
  // magnitude the row norms of W (B A = 0 at init).
  LoraLinear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
             std::shared_ptr<const AdapterSwitch> adapter_switch, const Options& options, torch::Generator& generator);

  std::vector<std::pair<std::string, torch::Tensor>> adapter_parameters() const override;
  MergedLinear merged() override;
  const Options& options() const { return options_; }
  // Recomputes DoRA's magnitude from the current A and B, as PEFT does when it creates the layer.
  void reset_dora_magnitude();

 protected:
  torch::Tensor adapted_forward(const torch::Tensor& input) override;

 private:
  torch::Tensor dora_weight_norm(const torch::Tensor& weight, const torch::Tensor& lora_weight) const;

  Options options_;
  torch::Tensor lora_A_;
  torch::Tensor lora_B_;
  torch::Tensor magnitude_;  // DoRA only
};

// IA3: base(x) * l (attention outputs), or base(x * l) on a feed-forward layer.
class Ia3Linear : public AdaptedLinear {
 public:
  // PEFT's default init: l = 1.
  Ia3Linear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
            std::shared_ptr<const AdapterSwitch> adapter_switch, bool feedforward, bool trainable);

  std::vector<std::pair<std::string, torch::Tensor>> adapter_parameters() const override;
  MergedLinear merged() override;
  bool feedforward() const { return feedforward_; }

 protected:
  torch::Tensor adapted_forward(const torch::Tensor& input) override;

 private:
  bool feedforward_;
  torch::Tensor scale_;
};

// AdaLoRA's SVD form: base(x) + dropout(x) (A * E)^T B^T * alpha / (ranknum + 1e-5), where
// ranknum is the initial rank (PEFT keeps it at init_r, also when it loads a pruned adapter).
class AdaLoraLinear : public AdaptedLinear {
 public:
  struct Options {
    int64_t rank = 12;       // rows of A / entries of E held by this layer
    double ranknum = 12.0;   // divides the scaling
    double alpha = 8.0;
    double dropout = 0.0;
    bool trainable = true;
  };
  // PEFT's default init: E zeros, A and B ~ N(0, 0.02) from `generator`.
  AdaLoraLinear(std::string module_path, AdaptableLinearImpl& layer, std::shared_ptr<BaseLinear> base,
                std::shared_ptr<const AdapterSwitch> adapter_switch, const Options& options, torch::Generator& generator);

  std::vector<std::pair<std::string, torch::Tensor>> adapter_parameters() const override;
  MergedLinear merged() override;
  const Options& options() const { return options_; }
  const torch::Tensor& lora_A() const { return lora_A_; }
  const torch::Tensor& lora_E() const { return lora_E_; }
  const torch::Tensor& lora_B() const { return lora_B_; }

 protected:
  torch::Tensor adapted_forward(const torch::Tensor& input) override;

 private:
  Options options_;
  torch::Tensor lora_A_;
  torch::Tensor lora_E_;
  torch::Tensor lora_B_;
};

}  // namespace n3rlhf
