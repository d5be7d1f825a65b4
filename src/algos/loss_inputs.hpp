// loss_inputs.hpp: the tensors the losses take (sequence log-probs summed over response tokens,
// response lengths) and the checks that turn a malformed batch into a typed error instead of a
// broadcasting surprise deep inside a formula.
#pragma once

#include <string>

#include <torch/torch.h>

namespace n3rlhf {

// One preference batch, B pairs. Every tensor is [B]. Log-probs are sums over the response
// tokens of log p(token_t | tokens_<t); lengths are the numbers of those tokens (any real or
// integer dtype). Which fields a loss reads is stated at the loss.
struct PreferenceLogps {
  torch::Tensor policy_chosen;
  torch::Tensor policy_rejected;
  torch::Tensor reference_chosen;    // undefined where the loss uses no reference model
  torch::Tensor reference_rejected;  // undefined where the loss uses no reference model
  torch::Tensor chosen_lengths;      // needed by IPO, SimPO, ORPO and the rpo_alpha NLL term
  torch::Tensor rejected_lengths;

  // From the [2B] tensors of a concatenated forward (rows 0..B-1 chosen, B..2B-1 rejected, the
  // layout TRL and the trainer use). `reference` and `lengths` may be undefined.
  static PreferenceLogps from_concatenated(const torch::Tensor& policy, const torch::Tensor& reference,
                                           const torch::Tensor& lengths);
};

// Throws RLHF025 unless `tensor` is a defined 1-D floating tensor of `size` elements (any size
// when size < 0). `what` names it in the message ("policy_chosen").
void check_sequence_tensor(const torch::Tensor& tensor, int64_t size, const std::string& what);
// As above for lengths: any real dtype, and every length must be >= 0.
void check_length_tensor(const torch::Tensor& tensor, int64_t size, const std::string& what);

// -(sum of the log-probs) / (sum of the lengths): the token-mean negative log-likelihood over
// all the responses of the batch, as a cross entropy over their tokens computes it (TRL's
// nll_loss for ORPO, CPO and rpo_alpha).
torch::Tensor token_mean_nll(const torch::Tensor& logp_sums, const torch::Tensor& lengths);

// log(1 - exp(x)) for x <= 0, without cancellation on either side of -ln 2.
torch::Tensor log1mexp(const torch::Tensor& x);

}  // namespace n3rlhf
