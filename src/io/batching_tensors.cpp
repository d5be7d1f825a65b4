// batching_tensors.cpp: flat arrays copied into CPU tensors, then moved to the device in one go.
#include "io/batching_tensors.hpp"

#include <algorithm>

namespace n3rlhf {

namespace {

template <typename Source>
torch::Tensor as_tensor(const std::vector<Source>& values, int64_t rows, int64_t columns, torch::ScalarType type) {
  torch::Tensor out = torch::empty({rows, columns}, torch::TensorOptions().dtype(type));
  AT_DISPATCH_ALL_TYPES(type, "n3rlhf_batch_to_tensor", [&] {
    scalar_t* data = out.data_ptr<scalar_t>();
    for (size_t i = 0; i < values.size(); ++i) data[i] = static_cast<scalar_t>(values[i]);
  });
  return out;
}

}  // namespace

BatchTensors to_tensors(const CollatedBatch& batch, const torch::Device& device) {
  BatchTensors tensors;
  const int64_t rows = batch.rows;
  const int64_t columns = batch.columns;
  tensors.input_ids = as_tensor(batch.input_ids, rows, columns, torch::kLong).to(device);
  tensors.attention_mask = as_tensor(batch.attention_mask, rows, columns, torch::kLong).to(device);
  tensors.loss_mask = as_tensor(batch.loss_mask, rows, columns, torch::kFloat).to(device);
  tensors.row_kinds = as_tensor(batch.row_kinds, rows, 1, torch::kChar).reshape({rows}).to(device);
  const auto positions = [&] { return as_tensor(batch.position_ids, rows, columns, torch::kLong).to(device); };
  const auto segments = [&] { return as_tensor(batch.segment_ids, rows, columns, torch::kInt).to(device); };
  if (batch.shares_prefix()) {
    const int64_t labels = static_cast<int64_t>(batch.label_ids.size());
    SharedPrefixRows shared;
    shared.position_ids = positions();
    shared.segment_ids = segments();
    shared.parent_segment_ids = as_tensor(batch.parent_segment_ids, rows, columns, torch::kInt).to(device);
    shared.label_sources = as_tensor(batch.label_sources, labels, 1, torch::kLong).reshape({labels}).to(device);
    shared.label_ids = as_tensor(batch.label_ids, labels, 1, torch::kLong).reshape({labels}).to(device);
    shared.label_sequences = as_tensor(batch.label_sequences, labels, 1, torch::kLong).reshape({labels}).to(device);
    shared.sequences = 2 * static_cast<int64_t>(batch.example_indices.size());
    tensors.rows = std::move(shared);
  } else if (std::any_of(batch.segment_ids.begin(), batch.segment_ids.end(), [](int32_t segment) { return segment > 1; })) {
    tensors.rows = PackedRows{positions(), segments()};
  }
  return tensors;
}

}  // namespace n3rlhf
