// sft_loss.cpp: the token-mean SFT cross entropy.
#include "algos/sft_loss.hpp"

#include "core/error.hpp"

namespace n3rlhf {

LossOutput sft_loss(const torch::Tensor& token_logps, const torch::Tensor& loss_mask,
                    std::optional<double> loss_tokens) {
  if (!token_logps.defined() || !loss_mask.defined() || token_logps.sizes() != loss_mask.sizes())
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch,
                       "the SFT loss needs a loss mask of the same shape as the token log-probs",
                       {{"token_logps", token_logps.defined() ? c10::str(token_logps.sizes()) : "undefined"},
                        {"loss_mask", loss_mask.defined() ? c10::str(loss_mask.sizes()) : "undefined"}});
  if (!torch::isFloatingType(token_logps.scalar_type()))
    throw DatasetError(ErrorCode::kPreferenceLabelMismatch, "the SFT token log-probs must be real numbers");
  const torch::Tensor logps =
      token_logps.scalar_type() == torch::kDouble ? token_logps : token_logps.to(torch::kFloat32);
  const torch::Tensor mask = loss_mask.to(logps.scalar_type());
  const torch::Tensor local_tokens = mask.sum();
  torch::Tensor normaliser;
  if (loss_tokens) {
    if (!(*loss_tokens > 0.0))
      throw DatasetError(ErrorCode::kInsufficientData, "the SFT loss normaliser (loss tokens in the global batch) must "
                                                       "be positive",
                         {{"loss_tokens", std::to_string(*loss_tokens)}});
    normaliser = torch::full({}, *loss_tokens, logps.options());
  } else {
    if (mask.device().is_cpu() && local_tokens.item<double>() <= 0.0)
      throw DatasetError(ErrorCode::kInsufficientData,
                         "the SFT batch has no token in its loss mask (every response empty or truncated away)");
    normaliser = local_tokens;
  }
  LossOutput output;
  output.loss = -(logps * mask).sum() / normaliser;
  output.add_metric("num_loss_tokens", local_tokens);
  return output;
}

}  // namespace n3rlhf
