// modules_to_save.hpp: PEFT's modules_to_save: whole modules (a reward model's score head, lm_head,
// embed_tokens, norms) trained beside the adapters and saved in the adapter file.
//
// PEFT wraps each such module in a ModulesToSaveWrapper that holds the original module and a
// trainable copy, runs the copy while the adapters are on and the original while they are off
// (disable_adapter), and saves the copy as "base_model.model.<module>.<parameter>". Here the
// model's own parameters become the trainable copy: they keep their names ("score.weight", PEFT's
// saved key without "base_model.model."), so the sharding engine shards, steps and checkpoints them
// like any trainable parameter, and the model's forward needs no change. The original values are
// kept aside; switching to the original swaps the values in place (and back).
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/transformer.hpp"

namespace n3rlhf {

struct SavedParameter {
  std::string name;         // the model's parameter name: "score.weight"
  torch::Tensor parameter;  // the model's parameter, which is the trained copy while in use
  torch::Tensor stashed;    // the values not in use: the original while the copy is in use, and the reverse
  bool transposed_in_file = false;  // GPT-2's Conv1D: PEFT's copy stores weight as [in, out]
};

class ModulesToSave {
 public:
  ModulesToSave() = default;

  // PEFT's _set_trainable: every module of `model` whose path ends with one of `names` (PEFT's
  // plain endswith: "norm" matches "model.norm" and every "...layernorm"). Its parameters become
  // trainable (`trainable`) and their current values are kept as the original. A name may match
  // nothing (PEFT's SEQ_CLS list has "classifier" beside "score"); none matching at all is RLHF031,
  // and so are matches nested in each other or in an adapted layer (`adapted_paths`), and the
  // input embedding or lm_head of a model whose LM head is tied to its embedding (PEFT would train
  // an untied copy of one of the two; n3rlhf has one tensor for both).
  static ModulesToSave attach(CausalTransformer& model, const std::vector<std::string>& names,
                             const std::vector<std::string>& adapted_paths, bool trainable);

  bool empty() const { return module_paths_.empty(); }
  const std::vector<std::string>& module_paths() const { return module_paths_; }
  const std::vector<SavedParameter>& parameters() const { return parameters_; }
  // The parameter named `name`, or nullptr.
  const SavedParameter* find(const std::string& name) const;

  // true: the original values are in the model's parameters (adapters disabled); false: the
  // trained copy. Copies through .data(), outside autograd's version counting: a graph built
  // before the switch still sees the trained values, which are back before its backward runs.
  void use_original(bool original);
  bool using_original() const { return using_original_; }
  // The trained values of a parameter, whichever are in the model now.
  torch::Tensor trained(const SavedParameter& saved) const { return using_original_ ? saved.stashed : saved.parameter; }

 private:
  std::vector<std::string> module_paths_;
  std::vector<SavedParameter> parameters_;
  bool using_original_ = false;
};

}  // namespace n3rlhf
