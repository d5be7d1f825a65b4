// loss_inputs.cpp: batch splitting and validation shared by the losses.
#include "algos/loss_inputs.hpp"

#include <cmath>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

std::string shape_string(const torch::Tensor& tensor) {
  std::string text = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) text += (d ? ", " : "") + std::to_string(tensor.size(d));
  return text + "]";
}

[[noreturn]] void throw_bad_tensor(const std::string& what, const std::string& problem, const torch::Tensor& tensor) {
  throw DatasetError(ErrorCode::kPreferenceLabelMismatch, "loss input '" + what + "' " + problem,
                     {{"tensor", what}, {"shape", tensor.defined() ? shape_string(tensor) : "undefined"}});
}

void check_shape(const torch::Tensor& tensor, int64_t size, const std::string& what) {
  if (!tensor.defined()) throw_bad_tensor(what, "is missing", tensor);
  if (tensor.dim() != 1) throw_bad_tensor(what, "must be one value per sequence (1-D)", tensor);
  if (size >= 0 && tensor.size(0) != size)
    throw_bad_tensor(what, "has " + std::to_string(tensor.size(0)) + " rows where the batch has " +
                               std::to_string(size),
                     tensor);
}

torch::Tensor split_half(const torch::Tensor& concatenated, bool second, const std::string& what) {
  if (!concatenated.defined()) return {};
  check_shape(concatenated, -1, what);
  if (concatenated.size(0) % 2 != 0)
    throw_bad_tensor(what, "must hold chosen rows then rejected rows (an even count)", concatenated);
  const int64_t half = concatenated.size(0) / 2;
  return concatenated.narrow(0, second ? half : 0, half);
}

}  // namespace

PreferenceLogps PreferenceLogps::from_concatenated(const torch::Tensor& policy, const torch::Tensor& reference,
                                                   const torch::Tensor& lengths) {
  PreferenceLogps logps;
  if (!policy.defined()) throw_bad_tensor("policy", "is missing", policy);
  logps.policy_chosen = split_half(policy, false, "policy");
  logps.policy_rejected = split_half(policy, true, "policy");
  logps.reference_chosen = split_half(reference, false, "reference");
  logps.reference_rejected = split_half(reference, true, "reference");
  logps.chosen_lengths = split_half(lengths, false, "lengths");
  logps.rejected_lengths = split_half(lengths, true, "lengths");
  return logps;
}

void check_sequence_tensor(const torch::Tensor& tensor, int64_t size, const std::string& what) {
  check_shape(tensor, size, what);
  if (!torch::isFloatingType(tensor.scalar_type())) throw_bad_tensor(what, "must hold real log-probs", tensor);
}

void check_length_tensor(const torch::Tensor& tensor, int64_t size, const std::string& what) {
  check_shape(tensor, size, what);
  if (tensor.is_complex() || tensor.scalar_type() == torch::kBool)
    throw_bad_tensor(what, "must hold token counts", tensor);
  // Only on the CPU: on a GPU the check would stall the stream every step, and lengths there come
  // from masks the trainer built, which cannot count below zero.
  if (tensor.device().is_cpu() && tensor.numel() > 0 && tensor.min().item<double>() < 0)
    throw_bad_tensor(what, "holds a negative token count", tensor);
}

torch::Tensor token_mean_nll(const torch::Tensor& logp_sums, const torch::Tensor& lengths) {
  return -(logp_sums.sum() / lengths.to(logp_sums.scalar_type()).sum());
}

torch::Tensor log1mexp(const torch::Tensor& x) {
  // Below -ln 2, exp(x) < 1/2 and log1p(-exp(x)) is exact enough; above it, 1 - exp(x) cancels
  // and -expm1(x) keeps the digits.
  const double minus_ln2 = -std::log(2.0);
  return torch::where(x < minus_ln2, torch::log1p(-torch::exp(x)), torch::log(-torch::expm1(x)));
}

}  // namespace n3rlhf
