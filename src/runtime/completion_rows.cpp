// completion_rows.cpp: laying groups of completions out as rows, and the passes over them.
#include "runtime/completion_rows.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "model/log_probs.hpp"

namespace n3rlhf {

TokenLayout CompletionRows::layout() const {
  TokenLayout layout;
  layout.attention_mask = attention_mask;
  layout.position_ids = position_ids;
  layout.segment_ids = segment_ids;
  layout.parent_segment_ids = parent_segment_ids;
  layout.unpadded_cells = unpadded_cells;
  return layout;
}

torch::Tensor CompletionRows::per_token(const torch::Tensor& values) const {
  return torch::zeros({completions * width}, values.options()).index_put({label_cells}, values).view({completions, width});
}

RowCosts row_costs(const ModelConfig& config) {
  const double hidden = static_cast<double>(config.hidden_size);
  const double head_dim = static_cast<double>(config.head_dim > 0 ? config.head_dim : config.hidden_size / std::max<int64_t>(1, config.num_attention_heads));
  const double query = static_cast<double>(config.num_attention_heads) * head_dim;
  const double key_value = static_cast<double>(config.num_key_value_heads > 0 ? config.num_key_value_heads : config.num_attention_heads) * head_dim;
  const double layers = static_cast<double>(config.num_hidden_layers);
  RowCosts costs;
  // q, k, v, o and a gated MLP (three matrices), 2 flops per weight.
  costs.token = 2.0 * layers * (hidden * (2.0 * query + 2.0 * key_value) + 3.0 * hidden * static_cast<double>(config.intermediate_size));
  // Q.K and P.V, 2 flops per product, and about as much again for the mask and the softmax.
  costs.attention_cell = 2.0 * 4.0 * layers * query;
  return costs;
}

namespace {

// The cost of the groups laid out shared (one row per group) or separate: the layers' products
// over the real tokens (padding cells are skipped, see unpadded_cells), attention over every
// cell of the [rows, columns] grid's squares.
double layout_cost(const std::vector<CompletionGroup>& groups, bool share, const RowCosts& costs) {
  double rows = 0.0, columns = 0.0, tokens = 0.0;
  for (const CompletionGroup& group : groups) {
    const double prompt = static_cast<double>(group.prompt_ids->size());
    if (share && group.completions.size() > 1) {
      double length = prompt;
      for (const auto* completion : group.completions) length += static_cast<double>(completion->size());
      rows += 1.0;
      columns = std::max(columns, length);
      tokens += length;
    } else {
      for (const auto* completion : group.completions) {
        rows += 1.0;
        columns = std::max(columns, prompt + static_cast<double>(completion->size()));
        tokens += prompt + static_cast<double>(completion->size());
      }
    }
  }
  return tokens * costs.token + rows * columns * columns * costs.attention_cell;
}

}  // namespace

CompletionRows build_completion_rows(const std::vector<CompletionGroup>& groups, const CompletionRowsOptions& options) {
  CompletionRows rows;
  const bool share_prompts =
      options.share_prompt && (!options.costs || layout_cost(groups, true, *options.costs) < layout_cost(groups, false, *options.costs));
  // Each row as a list of (token, position, segment, parent) and each completion's labels.
  struct Row {
    std::vector<int64_t> ids, positions;
    std::vector<int32_t> segments, parents;
  };
  std::vector<Row> laid_out;
  std::vector<int64_t> sources_row, sources_column, label_ids, label_cells, last_row, last_column;
  bool shared_any = false;
  int64_t completion = 0;
  const auto add_completion = [&](Row& row, size_t row_index, int64_t prompt_length, const std::vector<int64_t>& tokens,
                                  int32_t segment, int32_t parent) {
    const int64_t start = static_cast<int64_t>(row.ids.size());
    if (tokens.empty()) {
      throw ModelError(ErrorCode::kInvalidHyperparameter, "a completion without tokens cannot be scored",
                       {{"completion", std::to_string(completion)}});
    }
    for (size_t t = 0; t < tokens.size(); ++t) {
      row.ids.push_back(tokens[t]);
      row.positions.push_back(prompt_length + static_cast<int64_t>(t));
      row.segments.push_back(segment);
      row.parents.push_back(parent);
      sources_row.push_back(static_cast<int64_t>(row_index));
      sources_column.push_back(t == 0 ? prompt_length - 1 : start + static_cast<int64_t>(t) - 1);
      label_ids.push_back(tokens[t]);
      label_cells.push_back(static_cast<int64_t>(t));  // + completion x width once the width is known
    }
    int64_t scored = static_cast<int64_t>(tokens.size()) - 1;
    if (options.pad_token_id) {
      while (scored > 0 && tokens[static_cast<size_t>(scored)] == *options.pad_token_id) --scored;
    }
    last_row.push_back(static_cast<int64_t>(row_index));
    last_column.push_back(start + scored);
    rows.width = std::max<int64_t>(rows.width, static_cast<int64_t>(tokens.size()));
    rows.tokens += static_cast<int64_t>(tokens.size());
    ++completion;
  };
  std::vector<int64_t> label_completion;  // per label, its completion
  for (const CompletionGroup& group : groups) {
    const std::vector<int64_t>& prompt = *group.prompt_ids;
    const int64_t prompt_length = static_cast<int64_t>(prompt.size());
    const bool share = share_prompts && group.completions.size() > 1;
    shared_any = shared_any || share;
    const auto new_row = [&]() {
      Row row;
      row.ids = prompt;
      for (int64_t p = 0; p < prompt_length; ++p) row.positions.push_back(p);
      row.segments.assign(prompt.size(), 1);
      row.parents.assign(prompt.size(), 0);
      rows.tokens += prompt_length;
      laid_out.push_back(std::move(row));
      return laid_out.size() - 1;
    };
    size_t row_index = share ? new_row() : 0;
    for (size_t j = 0; j < group.completions.size(); ++j) {
      if (!share) row_index = new_row();
      const size_t before = label_ids.size();
      add_completion(laid_out[row_index], row_index, prompt_length, *group.completions[j], share ? static_cast<int32_t>(j + 2) : 1,
                     share ? 1 : 0);
      label_completion.insert(label_completion.end(), label_ids.size() - before, completion - 1);
    }
  }
  rows.completions = completion;
  int64_t columns = 0;
  for (const Row& row : laid_out) columns = std::max<int64_t>(columns, static_cast<int64_t>(row.ids.size()));
  const int64_t count = static_cast<int64_t>(laid_out.size());
  const auto int64 = torch::TensorOptions().dtype(torch::kInt64);
  const auto int32 = torch::TensorOptions().dtype(torch::kInt32);
  torch::Tensor ids = torch::zeros({count, columns}, int64);
  torch::Tensor mask = torch::zeros({count, columns}, int64);
  torch::Tensor positions = torch::zeros({count, columns}, int64);
  torch::Tensor segments = torch::zeros({count, columns}, int32);
  torch::Tensor parents = torch::zeros({count, columns}, int32);
  for (int64_t r = 0; r < count; ++r) {
    const Row& row = laid_out[static_cast<size_t>(r)];
    const int64_t length = static_cast<int64_t>(row.ids.size());
    ids[r].narrow(0, 0, length).copy_(torch::tensor(row.ids, int64));
    mask[r].narrow(0, 0, length).fill_(1);
    positions[r].narrow(0, 0, length).copy_(torch::tensor(row.positions, int64));
    segments[r].narrow(0, 0, length).copy_(torch::tensor(row.segments, int32));
    parents[r].narrow(0, 0, length).copy_(torch::tensor(row.parents, int32));
  }
  for (size_t k = 0; k < label_cells.size(); ++k) label_cells[k] += label_completion[k] * rows.width;
  const torch::Device device = options.device;
  const auto flat = [&](const std::vector<int64_t>& row_index, const std::vector<int64_t>& column) {
    return (torch::tensor(row_index, int64) * columns + torch::tensor(column, int64)).to(device);
  };
  rows.input_ids = ids.to(device);
  rows.attention_mask = mask.to(device);
  if (shared_any) {
    rows.position_ids = positions.to(device);
    rows.segment_ids = segments.to(device);
    rows.parent_segment_ids = parents.to(device);
  }
  rows.label_sources = flat(sources_row, sources_column);
  rows.label_ids = torch::tensor(label_ids, int64).to(device);
  rows.label_cells = torch::tensor(label_cells, int64).to(device);
  rows.last_tokens = flat(last_row, last_column);
  if (rows.tokens < count * columns) {  // padded: the layers run on the real tokens only
    std::vector<int64_t> cells;
    cells.reserve(static_cast<size_t>(rows.tokens));
    for (int64_t r = 0; r < count; ++r) {
      const int64_t length = static_cast<int64_t>(laid_out[static_cast<size_t>(r)].ids.size());
      for (int64_t c = 0; c < length; ++c) cells.push_back(r * columns + c);
    }
    rows.unpadded_cells = torch::tensor(cells, int64).to(device);
  }
  return rows;
}

RowsForward forward_completion_rows(CausalTransformer& model, const CompletionRows& rows, double temperature, bool want_values) {
  const torch::Tensor hidden = model->hidden_states(rows.input_ids, rows.layout());
  const torch::Tensor predictors = hidden.reshape({-1, hidden.size(-1)}).index_select(0, rows.label_sources);
  LogProbOptions options;
  options.temperature = temperature;
  RowsForward forward;
  forward.log_probs = rows.per_token(token_log_probs(predictors, model->output_embedding(), rows.label_ids, options));
  if (want_values) forward.values = rows.per_token(model->values(predictors.unsqueeze(0)).squeeze(0).to(torch::kFloat32));
  return forward;
}

torch::Tensor score_completion_rows(CausalTransformer& classifier, const CompletionRows& rows) {
  const torch::Tensor hidden = classifier->hidden_states(rows.input_ids, rows.layout());
  const torch::Tensor pooled = hidden.reshape({-1, hidden.size(-1)}).index_select(0, rows.last_tokens);
  return classifier->classification_scores(pooled).select(1, 0).to(torch::kFloat32);
}

torch::Tensor critic_values_rows(CausalTransformer& critic, const CompletionRows& rows) {
  const torch::Tensor hidden = critic->hidden_states(rows.input_ids, rows.layout());
  const torch::Tensor predictors = hidden.reshape({-1, hidden.size(-1)}).index_select(0, rows.label_sources);
  return rows.per_token(critic->classification_scores(predictors).select(1, 0).to(torch::kFloat32));
}

}  // namespace n3rlhf
