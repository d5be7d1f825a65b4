// adapters.hpp: PEFT adapters (LoRA, DoRA, IA3, AdaLoRA; QLoRA = LoRA over a quantized base) on a
// CausalTransformer, read and written in PEFT's file format. The API the trainer uses:
//
//   CausalTransformer policy = load_pretrained(dir).model;
//   AdapterSet adapters = attach_adapters(policy, job.peft, {.seed = job.seed, .total_steps = max_steps});
//       // freezes every base parameter; adapter parameters are the only trainable ones, named
//       // "model.layers.3.self_attn.q_proj.lora_A.weight" etc., so the sharding engine (built
//       // AFTER this call) puts each layer's adapters in that layer's unit and leaves the frozen
//       // base alone. peft.modules_to_save (a reward model's "score", added for a score head as
//       // PEFT's SEQ_CLS does) makes whole modules trainable too, under their own names
//       // ("score.weight"). With peft.adapter_path the adapter is read from that directory instead
//       // (its adapter_config.json says what it is); load_adapter(policy, dir) reads one as it is.
//   Reference log-probs (DPO, KTO, PPO) from the same model with adapters off, no second copy
//   (modules_to_save switch to their original values too):
//       { AdapterDisabledGuard reference_mode(adapters); torch::NoGradGuard no_grad; ref = policy->forward(...); }
//   AdaLoRA, each optimizer step:
//       loss = loss + adapters.adalora_orthogonal_regularizer();     // before backward
//       ... backward, optimizer step ...
//       adapters.adalora_update_and_allocate(global_step, gradient);   // before gradients are cleared
//   Saving: save_adapter(adapters, output_dir) writes adapter_config.json + adapter_model.safetensors;
//   merge_adapters_into_base(adapters) then save_pretrained(policy, dir, {.skip_parameter =
//   is_adapter_parameter_name}) writes a plain Hugging Face model (what `n3rlhf merge` does).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "adapters/adalora_allocator.hpp"
#include "adapters/adapted_linear.hpp"
#include "adapters/adapter_config.hpp"
#include "adapters/modules_to_save.hpp"
#include "core/config.hpp"
#include "model/transformer.hpp"

namespace n3rlhf {

// Builds the frozen base of one targeted layer; the default keeps the layer's own dense weight.
// QLoRA passes one that quantizes layer.weight and returns a BaseLinear over the quantized copy.
using BaseLinearFactory = std::function<std::shared_ptr<BaseLinear>(const std::string& module_path, AdaptableLinearImpl& layer)>;

struct AttachOptions {
  uint64_t seed = 0;          // adapter initialisation; the same seed gives the same adapters on every rank
  int64_t total_steps = 0;    // AdaLoRA's schedule length (the job's max steps); unused otherwise
  bool trainable = true;      // false: adapter parameters frozen too (inference, parity, merge)
  BaseLinearFactory make_base;  // empty: DenseBaseLinear
};

class AdapterSet {
 public:
  AdapterSet(AdapterConfig config, std::vector<std::shared_ptr<AdaptedLinear>> layers, std::shared_ptr<AdapterSwitch> adapter_switch,
             ModulesToSave modules_to_save = {});
  AdapterSet(AdapterSet&&) noexcept;
  AdapterSet& operator=(AdapterSet&&) noexcept;
  ~AdapterSet();
  AdapterSet(const AdapterSet&) = delete;
  AdapterSet& operator=(const AdapterSet&) = delete;

  const AdapterConfig& config() const { return config_; }
  const std::vector<std::shared_ptr<AdaptedLinear>>& layers() const { return layers_; }
  // The modules trained whole beside the adapters (PEFT's modules_to_save).
  const ModulesToSave& modules_to_save() const { return modules_to_save_; }
  // Every tensor the adapter file holds, by model parameter name: the adapter tensors
  // ("model.layers.0.self_attn.q_proj.lora_A.weight") and the parameters of the modules to save
  // ("score.weight").
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  int64_t parameter_count() const;

  // false: every adapted layer computes its bare base and the modules to save hold their original
  // values (AdapterDisabledGuard is the scoped form).
  bool enabled() const { return switch_->enabled; }
  void set_enabled(bool enabled);

  // What adapter_model.safetensors holds: PEFT keys ("base_model.model.<name>") and tensors, an
  // AdaLoRA layer's pruned ranks removed as PEFT removes them. `gathered`, when given, supplies
  // full tensors by model parameter name (FSDP keeps layer parameters sharded between forwards).
  std::vector<std::pair<std::string, torch::Tensor>> peft_state_dict(
      const std::function<torch::Tensor(const std::string&)>& gathered = {}) const;
  // The config as adapter_config.json states it (resolved targets, AdaLoRA's rank pattern).
  AdapterConfig saved_config() const;

  // AdaLoRA (no-ops for the other kinds): the loss term and the per-step rank allocation. The
  // gradient lookup gets the model parameter name; the default reads parameter.grad().
  torch::Tensor adalora_orthogonal_regularizer() const;
  void adalora_update_and_allocate(int64_t global_step, const GradientLookup& gradient = {});
  AdaLoraAllocator* adalora_allocator() { return allocator_.get(); }
  // An AdaLoRA adapter loaded already pruned to a rank pattern: its layers hold the kept ranks
  // only, the pattern stays as it is and no budget schedule runs.
  bool adalora_pattern_fixed() const { return adalora_pattern_fixed_; }

  // Folds every adapter into its layer's weight (and IA3's bias) as PEFT's merge_and_unload does,
  // and removes the forward overrides: the model then computes the merged base, with the trained
  // copies of the modules to save (PEFT's merge keeps those too). The adapter tensors stay
  // registered (libtorch cannot unregister a parameter); save with is_adapter_parameter_name as
  // the skip filter.
  void merge_into_base();

 private:
  AdapterConfig config_;
  std::vector<std::shared_ptr<AdaptedLinear>> layers_;
  std::shared_ptr<AdapterSwitch> switch_;
  std::unique_ptr<AdaLoraAllocator> allocator_;
  ModulesToSave modules_to_save_;
  bool adalora_pattern_fixed_ = false;
  bool merged_ = false;
};

// Attaches adapters for a job's peft section (defaults as PEFT's for the model's family). Freezes
// every base parameter. On a model with a score head (reward models) "score" joins
// modules_to_save and task_type is SEQ_CLS, as PEFT's task_type SEQ_CLS does. With
// peft.adapter_path the adapter is that directory's (continue_adapter below). RLHF031 when no
// module of the model matches the targets; RLHF004 when the model already has adapters.
AdapterSet attach_adapters(CausalTransformer& model, const PeftConfig& peft, const AttachOptions& options = {});
AdapterSet attach_adapters(CausalTransformer& model, const AdapterConfig& config, const AttachOptions& options = {});

// Reads DIR/adapter_config.json and DIR/adapter_model.safetensors (as PEFT's save_pretrained
// writes them) onto `model`. RLHF002 for an unknown peft_type; RLHF031 naming the tensor when the
// file does not fit the base (a module it does not have, a shape that differs, a missing tensor).
AdapterSet load_adapter(CausalTransformer& model, const std::string& directory, const AttachOptions& options = {});
// The same with `config` in place of DIR's adapter_config.json (continue_adapter adjusts it).
// Modules to save matched by a name in `modules_not_in_file` may lack tensors in the file: they
// start from the model's own values.
AdapterSet load_adapter(CausalTransformer& model, const std::string& directory, const AdapterConfig& config,
                        const AttachOptions& options, const std::vector<std::string>& modules_not_in_file = {});

// Continues training from the PEFT adapter in peft.adapter_path: its adapter_config.json says what
// the adapter is (type, r, alpha, targets, rank pattern, modules_to_save). peft.method must fit it
// (RLHF004; "qlora" fits a LoRA adapter and quantizes the base). AdaLoRA: an adapter already
// pruned to a rank pattern keeps that pattern (no budget schedule runs: the dropped ranks are not
// in the file); one without a pattern runs the job's schedule (tinit, tfinal, delta_t) over
// `options.total_steps`. On a model with a score head, "score" joins modules_to_save as in
// attach_adapters (starting from the model's score when the adapter does not carry one).
AdapterSet continue_adapter(CausalTransformer& model, const PeftConfig& peft, const AttachOptions& options = {});

// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors so that
// PeftModel.from_pretrained(base, DIR) rebuilds the same adapter.
void save_adapter(const AdapterSet& adapters, const std::string& directory,
                  const std::function<torch::Tensor(const std::string&)>& gathered = {});

// Whether a model parameter name belongs to an adapter (lora_A/lora_B/lora_E/lora_magnitude_vector/ia3_l).
bool is_adapter_parameter_name(const std::string& name);

// Switches the adapters off for its scope (the reference model of DPO/KTO/PPO under PEFT); the
// modules to save hold their original values meanwhile.
class AdapterDisabledGuard {
 public:
  explicit AdapterDisabledGuard(AdapterSet& adapters) : adapters_(adapters), previous_(adapters.enabled()) {
    adapters_.set_enabled(false);
  }
  ~AdapterDisabledGuard() { adapters_.set_enabled(previous_); }
  AdapterDisabledGuard(const AdapterDisabledGuard&) = delete;
  AdapterDisabledGuard& operator=(const AdapterDisabledGuard&) = delete;

 private:
  AdapterSet& adapters_;
  bool previous_;
};

// `n3rlhf merge BASE ADAPTER OUT`: the base with the adapter folded in, as a Hugging Face model
// directory (config.json, safetensors, the base's tokenizer files). Returns the number of layers merged.
int64_t merge_adapter_checkpoint(const std::string& base_directory, const std::string& adapter_directory,
                                 const std::string& output_directory);

}  // namespace n3rlhf
