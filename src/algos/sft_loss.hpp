// sft_loss.hpp: the supervised fine-tuning loss: the token-mean cross entropy over the tokens of
// the loss mask (response tokens only, or every token when the job trains on prompts too).
#pragma once

#include <optional>

#include "algos/loss_output.hpp"

namespace n3rlhf {

// token_logps [B, T]: log p(x_t | x_<t) (next_token_log_probs of src/model); loss_mask [B, T] of
// 0/1 aligned with it. loss = -sum(token_logps * mask) / normaliser, where the normaliser is
// the mask's token count, or `loss_tokens` when given: a trainer that accumulates gradients over
// micro-batches or ranks passes the token count of the whole global batch, so that the summed
// gradients equal those of one token mean over all of it. Metric: num_loss_tokens (the local
// count). RLHF025 for mismatched shapes, RLHF023 when no token is in the mask.
LossOutput sft_loss(const torch::Tensor& token_logps, const torch::Tensor& loss_mask,
                    std::optional<double> loss_tokens = std::nullopt);

}  // namespace n3rlhf
