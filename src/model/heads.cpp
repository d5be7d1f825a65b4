// heads.cpp: head kinds, the value head and the sequence-classification pooling index.
#include "model/heads.hpp"

#include "core/error.hpp"

namespace n3rlhf {

ValueHeadImpl::ValueHeadImpl(int64_t hidden_size) {
  summary_ = register_module("summary", torch::nn::Linear(torch::nn::LinearOptions(hidden_size, 1)));
}

void ValueHeadImpl::initialise(ValueHeadInit init, double std) {
  torch::NoGradGuard no_grad;
  if (init == ValueHeadInit::kDefault) {
    summary_->reset_parameters();
    return;
  }
  summary_->weight.normal_(0.0, std);
  summary_->bias.zero_();
}

torch::Tensor ValueHeadImpl::forward(const torch::Tensor& hidden) {
  // TRL computes the value head in the head's dtype and returns float32 values.
  return summary_->forward(hidden.to(summary_->weight.scalar_type())).squeeze(-1).to(torch::kFloat32);
}

torch::Tensor scored_token_indices(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                   std::optional<int64_t> pad_token_id) {
  const int64_t length = input_ids.size(1);
  const torch::Tensor positions = torch::arange(length, input_ids.options().dtype(torch::kInt64)).unsqueeze(0);
  torch::Tensor is_scored;
  if (pad_token_id) {
    is_scored = input_ids.ne(*pad_token_id);
  } else if (attention_mask.defined()) {
    is_scored = attention_mask.to(input_ids.device()).to(torch::kBool);
  } else {
    return torch::full({input_ids.size(0)}, length - 1, positions.options());
  }
  return (positions * is_scored.to(torch::kInt64)).argmax(-1);
}

}  // namespace n3rlhf
