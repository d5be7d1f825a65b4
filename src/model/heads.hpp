// heads.hpp: what sits on top of the transformer body: which head a model carries, the value
// head of the PPO critic (TRL's v_head.summary), and the pooling of *ForSequenceClassification.
#pragma once

#include <optional>
#include <string>

#include <torch/torch.h>

namespace n3rlhf {

enum class HeadKind {
  kCausalLM,                // lm_head (or the tied embedding)
  kSequenceClassification,  // score.weight [num_labels, hidden], no bias
  kCausalLMWithValue,       // lm_head plus v_head.summary (TRL AutoModelForCausalLMWithValueHead)
};


// How new value-head weights start, as TRL's ValueHead: kDefault is nn.Linear's own
// initialisation (TRL's default); kNormal draws the weight from N(0, std) and zeroes the bias
// (TRL's v_head_init_strategy="normal", std = v_head_initializer_range = 0.2).
enum class ValueHeadInit { kDefault, kNormal };

class ValueHeadImpl : public torch::nn::Module {
 public:
  explicit ValueHeadImpl(int64_t hidden_size);
  void initialise(ValueHeadInit init, double std = 0.2);
  // hidden [B, T, C] -> values [B, T] in float32.
  torch::Tensor forward(const torch::Tensor& hidden);

 private:
  torch::nn::Linear summary_{nullptr};
};
TORCH_MODULE(ValueHead);

// The index of the token whose hidden state scores each row [B], as *ForSequenceClassification
// picks it: the rightmost token that is not pad_token_id (so left and right padding both work).
// Without a pad id, the last position where attention_mask is 1 (or the last position).
torch::Tensor scored_token_indices(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                   std::optional<int64_t> pad_token_id);

}  // namespace n3rlhf
