// log_probs.cpp: the chunked log-prob autograd function. Forward keeps only the logsumexp per
// token; backward recomputes each chunk's logits, so peak memory is one chunk of logits. Below a
// byte budget forward keeps every chunk's logits instead and backward skips the recomputation.
#include "model/log_probs.hpp"

#include "core/error.hpp"

namespace n3rlhf {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Logits of one chunk of rows, in float32, at the temperature.
torch::Tensor chunk_logits(const torch::Tensor& hidden_rows, const torch::Tensor& weight, double temperature) {
  torch::Tensor logits = torch::mm(hidden_rows, weight.t()).to(torch::kFloat32);
  if (temperature != 1.0) logits = logits / temperature;
  return logits;
}

class ChunkedLogProbs : public torch::autograd::Function<ChunkedLogProbs> {
 public:
  // hidden [N, C], weight [V, C], labels [N] -> [N] float32.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               const torch::Tensor& labels, int64_t chunk, double temperature, int64_t saved_logits_budget) {
    const int64_t rows = hidden.size(0);
    torch::Tensor result = torch::zeros({rows}, hidden.options().dtype(torch::kFloat32));
    torch::Tensor logsumexp = torch::zeros({rows}, result.options());
    const torch::Tensor valid = labels.ge(0);
    const torch::Tensor safe_labels = labels.clamp_min(0);
    // Kept for backward only when gradients will be asked for and all of it fits the budget.
    const bool keep_logits = torch::GradMode::is_enabled() && (hidden.requires_grad() || weight.requires_grad()) &&
                             rows * weight.size(0) * static_cast<int64_t>(sizeof(float)) <= saved_logits_budget;
    torch::Tensor kept = keep_logits ? torch::empty({rows, weight.size(0)}, result.options()) : torch::Tensor();
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t size = std::min(chunk, rows - start);
      torch::Tensor logits;
      if (keep_logits && temperature == 1.0 && weight.scalar_type() == torch::kFloat32) {
        logits = kept.narrow(0, start, size);  // written in place: no copy of the chunk
        torch::mm_out(logits, hidden.narrow(0, start, size), weight.t());
      } else {
        logits = chunk_logits(hidden.narrow(0, start, size), weight, temperature);
        if (keep_logits) kept.narrow(0, start, size).copy_(logits);
      }
      const torch::Tensor lse = logits.logsumexp(-1);
      const torch::Tensor picked = logits.gather(1, safe_labels.narrow(0, start, size).unsqueeze(1)).squeeze(1);
      logsumexp.narrow(0, start, size).copy_(lse);
      result.narrow(0, start, size).copy_(picked - lse);
    }
    result.masked_fill_(valid.logical_not(), 0.0);
    ctx->save_for_backward({hidden, weight, labels, logsumexp, kept});
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["temperature"] = temperature;
    return result;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& hidden = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& labels = saved[2];
    const torch::Tensor& logsumexp = saved[3];
    const torch::Tensor& kept = saved[4];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const torch::Tensor grad = grad_outputs[0].to(torch::kFloat32).masked_fill(labels.lt(0), 0.0);
    const torch::Tensor safe_labels = labels.clamp_min(0);
    const int64_t rows = hidden.size(0);
    const bool need_hidden = ctx->needs_input_grad(0);
    const bool need_weight = ctx->needs_input_grad(1);
    torch::Tensor grad_hidden = need_hidden ? torch::empty_like(hidden) : torch::Tensor();
    // float32 weights accumulate the chunks' products in place (the first one writes it);
    // others accumulate in a float32 buffer and are cast once at the end.
    const bool float_weight = weight.scalar_type() == torch::kFloat32;
    torch::Tensor grad_weight;
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t size = std::min(chunk, rows - start);
      const torch::Tensor hidden_rows = hidden.narrow(0, start, size);
      // d(logit_label - lse)/d logits = onehot(label) - softmax; times the incoming gradient.
      torch::Tensor grad_logits =
          kept.defined() ? kept.narrow(0, start, size).sub(logsumexp.narrow(0, start, size).unsqueeze(1))
                         : chunk_logits(hidden_rows, weight, temperature).sub_(logsumexp.narrow(0, start, size).unsqueeze(1));
      grad_logits.exp_().neg_();
      grad_logits.scatter_add_(1, safe_labels.narrow(0, start, size).unsqueeze(1),
                               torch::ones({size, 1}, grad_logits.options()));
      grad_logits.mul_(grad.narrow(0, start, size).unsqueeze(1));
      if (temperature != 1.0) grad_logits.div_(temperature);
      const torch::Tensor grad_logits_cast = grad_logits.to(weight.scalar_type());
      if (need_hidden) grad_hidden.narrow(0, start, size).copy_(torch::mm(grad_logits_cast, weight));
      if (need_weight) {
        if (!grad_weight.defined()) {
          grad_weight = torch::mm(grad_logits_cast.t(), hidden_rows).to(torch::kFloat32);
        } else if (float_weight) {
          grad_weight.addmm_(grad_logits_cast.t(), hidden_rows);
        } else {
          grad_weight.add_(torch::mm(grad_logits_cast.t(), hidden_rows).to(torch::kFloat32));
        }
      }
    }
    if (need_weight && !grad_weight.defined()) grad_weight = torch::zeros_like(weight);  // no rows
    if (need_weight) grad_weight = grad_weight.to(weight.scalar_type());
    return {grad_hidden, grad_weight, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor token_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
                              const LogProbOptions& options) {
  if (hidden.size(-1) != weight.size(1) || labels.sizes() != hidden.sizes().slice(0, hidden.dim() - 1)) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture, "token_log_probs: hidden [..., C], weight [V, C] and labels [...] do not match");
  }
  if (options.chunk_tokens <= 0 || options.temperature <= 0 || options.saved_logits_budget_bytes < 0) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "token_log_probs needs chunk_tokens > 0, temperature > 0 and saved_logits_budget_bytes >= 0");
  }
  const auto leading = labels.sizes().vec();
  const torch::Tensor flat_hidden = hidden.reshape({-1, hidden.size(-1)});
  const torch::Tensor flat_labels = labels.reshape({-1}).to(hidden.device()).to(torch::kInt64);
  const torch::Tensor result = ChunkedLogProbs::apply(flat_hidden, weight, flat_labels, options.chunk_tokens, options.temperature,
                                                       options.saved_logits_budget_bytes);
  return result.view(leading);
}

torch::Tensor next_token_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& input_ids,
                                   const LogProbOptions& options) {
  const int64_t length = hidden.size(1);
  if (length < 2) return torch::zeros({hidden.size(0), 0}, hidden.options().dtype(torch::kFloat32));
  return token_log_probs(hidden.narrow(1, 0, length - 1), weight, input_ids.narrow(1, 1, length - 1), options);
}

torch::Tensor gathered_sequence_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& sources,
                                          const torch::Tensor& labels, const torch::Tensor& sequence_index, int64_t sequences,
                                          const LogProbOptions& options) {
  if (sources.dim() != 1 || labels.sizes() != sources.sizes() || sequence_index.sizes() != sources.sizes()) {
    throw ModelError(ErrorCode::kIncompatibleArchitecture,
                     "gathered_sequence_log_probs: sources, labels and sequence_index must be [labels] each");
  }
  const torch::Tensor rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, sources.to(hidden.device()));
  const torch::Tensor logps = token_log_probs(rows, weight, labels, options);
  const torch::Tensor sums = torch::zeros({sequences}, logps.options());
  return sums.index_add(0, sequence_index.to(logps.device()), logps);
}

torch::Tensor masked_sequence_sums(const torch::Tensor& values, const torch::Tensor& mask) {
  return (values.to(torch::kFloat32) * mask.to(values.device()).to(torch::kFloat32)).sum(-1);
}

torch::Tensor naive_token_log_probs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& labels,
                                    double temperature) {
  torch::Tensor logits = torch::matmul(hidden, weight.t()).to(torch::kFloat32) / temperature;
  const torch::Tensor valid = labels.ge(0);
  const torch::Tensor picked = logits.log_softmax(-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1);
  return picked.masked_fill(valid.logical_not(), 0.0);
}

}  // namespace n3rlhf
