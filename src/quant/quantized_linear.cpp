// quantized_linear.cpp: QuantizedLinearWeight (quantize, dequantize, move, bitsandbytes state
// dicts) and QuantizedLinearFunction (the matmul that dequantizes W in forward and backward).
#include "quant/quantized_linear.hpp"

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "quant/int8_rowwise.hpp"
#include "quant/nf4.hpp"
#include "quant/quant_codes.hpp"

namespace n3rlhf::quant {
namespace {

int64_t tensor_bytes(const torch::Tensor& tensor) {
  return tensor.defined() ? tensor.numel() * static_cast<int64_t>(tensor.element_size()) : 0;
}

int64_t float_bits(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float bits_float(int64_t stored) {
  const auto bits = static_cast<uint32_t>(stored);
  float value = 0.0f;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

[[noreturn]] void bad_state(const std::string& key, const std::string& what) {
  throw ModelError(ErrorCode::kModelLoadFailure, "quantized weight " + key + ": " + what, {{"tensor", key}});
}

const torch::Tensor& require(const std::map<std::string, torch::Tensor>& tensors, const std::string& key) {
  const auto found = tensors.find(key);
  if (found == tensors.end()) bad_state(key, "missing from the state dict");
  return found->second;
}

// bitsandbytes keeps Linear8bitLt's scale beside the weight, as <module>.SCB.
std::string scale_key_for(const std::string& weight_key) {
  const std::string suffix = "weight";
  if (weight_key.size() >= suffix.size() &&
      weight_key.compare(weight_key.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return weight_key.substr(0, weight_key.size() - suffix.size()) + "SCB";
  }
  return weight_key + ".SCB";
}

torch::Tensor json_as_bytes(const nlohmann::json& json) {
  const std::string text = json.dump();
  torch::Tensor bytes = torch::empty({static_cast<int64_t>(text.size())}, torch::kUInt8);
  std::memcpy(bytes.data_ptr<uint8_t>(), text.data(), text.size());
  return bytes;
}

nlohmann::json bytes_as_json(const torch::Tensor& bytes, const std::string& key) {
  const torch::Tensor cpu = bytes.to(torch::kCPU, torch::kUInt8).contiguous();
  const std::string text(reinterpret_cast<const char*>(cpu.data_ptr<uint8_t>()), static_cast<size_t>(cpu.numel()));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    bad_state(key, std::string("quant_state is not JSON: ") + error.what());
  }
}

}  // namespace

QuantizedLinearWeight QuantizedLinearWeight::from_dense(const torch::Tensor& weight, int64_t bits,
                                                        int64_t block_size, bool double_quantization) {
  QuantizationOptions options;
  options.bits = bits;
  options.block_size = block_size;
  options.double_quantization = double_quantization;
  return from_dense(weight, options);
}

QuantizedLinearWeight QuantizedLinearWeight::from_dense(const torch::Tensor& weight,
                                                        const QuantizationOptions& options) {
  validate(options);
  TORCH_CHECK(weight.dim() == 2, "a linear weight is [out, in], got ", weight.sizes());
  QuantizedLinearWeight result;
  result.options_ = options;
  result.out_features_ = weight.size(0);
  result.in_features_ = weight.size(1);
  const torch::Device device = weight.device();
  const torch::Tensor cpu_weight = weight.detach().to(torch::kCPU, torch::kFloat32);
  if (options.bits == 8) {
    result.options_.double_quantization = false;  // one float scale per row; nothing to compress
    Int8Rows rows = quantize_int8_rowwise(cpu_weight);
    result.int8_codes_ = rows.codes;
    result.row_absmax_ = rows.row_absmax;
  } else {
    Nf4Blocks blocks = quantize_nf4(cpu_weight, options.block_size);
    result.packed_ = blocks.packed;
    if (options.double_quantization) {
      result.double_absmax_ = double_quantize_absmax(blocks.absmax);
    } else {
      result.absmax_ = blocks.absmax;
    }
  }
  result.to(device);
  return result;
}

torch::Tensor QuantizedLinearWeight::dequantize(torch::ScalarType dtype) const {
  if (options_.bits == 8) {
    return dequantize_int8_rowwise(int8_codes_, row_absmax_).to(dtype);
  }
  const torch::Tensor absmax = options_.double_quantization ? dequantize_absmax(double_absmax_) : absmax_;
  return dequantize_nf4(packed_, absmax, options_.block_size, out_features_ * in_features_, dtype)
      .view({out_features_, in_features_});
}

torch::Tensor QuantizedLinearWeight::forward(const torch::Tensor& input, const torch::Tensor& bias) const {
  // The bias is added outside the custom function: libtorch's Function cannot take an undefined
  // tensor argument, and autograd differentiates an add on its own.
  const torch::Tensor output = QuantizedLinearFunction::apply(input, *this);
  return bias.defined() ? output + bias.to(output.scalar_type()) : output;
}

int64_t QuantizedLinearWeight::storage_bytes() const {
  if (options_.bits == 8) return tensor_bytes(int8_codes_) + tensor_bytes(row_absmax_);
  int64_t bytes = tensor_bytes(packed_) + tensor_bytes(absmax_);
  if (options_.double_quantization) {
    const BlockwiseQuantized8& centred = double_absmax_.centred;
    bytes += tensor_bytes(centred.codes) + tensor_bytes(centred.absmax) + tensor_bytes(centred.code) +
             static_cast<int64_t>(sizeof(double_absmax_.offset));
  }
  return bytes;
}

torch::Device QuantizedLinearWeight::device() const {
  return options_.bits == 8 ? int8_codes_.device() : packed_.device();
}

QuantizedLinearWeight& QuantizedLinearWeight::to(const torch::Device& device) {
  for (torch::Tensor* tensor : {&packed_, &absmax_, &double_absmax_.centred.codes, &double_absmax_.centred.absmax,
                                &double_absmax_.centred.code, &int8_codes_, &row_absmax_}) {
    if (tensor->defined()) *tensor = tensor->to(device);
  }
  return *this;
}

std::vector<torch::Tensor> QuantizedLinearWeight::saved_tensors() const {
  if (options_.bits == 8) return {int8_codes_, row_absmax_};
  if (options_.double_quantization) {
    return {packed_, double_absmax_.centred.codes, double_absmax_.centred.absmax, double_absmax_.centred.code};
  }
  return {packed_, absmax_};
}

std::vector<int64_t> QuantizedLinearWeight::saved_layout() const {
  return {options_.bits, options_.block_size, options_.double_quantization ? 1 : 0, out_features_, in_features_,
          float_bits(double_absmax_.offset)};
}

QuantizedLinearWeight QuantizedLinearWeight::from_saved(const std::vector<torch::Tensor>& tensors,
                                                        const std::vector<int64_t>& layout) {
  TORCH_CHECK(layout.size() == 6, "quantized weight layout has 6 entries");
  QuantizedLinearWeight result;
  result.options_.bits = layout[0];
  result.options_.block_size = layout[1];
  result.options_.double_quantization = layout[2] != 0;
  result.out_features_ = layout[3];
  result.in_features_ = layout[4];
  result.double_absmax_.offset = bits_float(layout[5]);
  if (result.options_.bits == 8) {
    result.int8_codes_ = tensors.at(0);
    result.row_absmax_ = tensors.at(1);
  } else if (result.options_.double_quantization) {
    result.packed_ = tensors.at(0);
    result.double_absmax_.centred.codes = tensors.at(1);
    result.double_absmax_.centred.absmax = tensors.at(2);
    result.double_absmax_.centred.code = tensors.at(3);
    result.double_absmax_.centred.block_size = kDoubleQuantBlockSize;
  } else {
    result.packed_ = tensors.at(0);
    result.absmax_ = tensors.at(1);
  }
  return result;
}

std::map<std::string, torch::Tensor> QuantizedLinearWeight::state_dict(const std::string& weight_key) const {
  std::map<std::string, torch::Tensor> tensors;
  if (options_.bits == 8) {
    tensors[weight_key] = int8_codes_;
    tensors[scale_key_for(weight_key)] = row_absmax_;
    return tensors;
  }
  tensors[weight_key] = packed_.view({-1, 1});
  tensors[weight_key + ".quant_map"] = nf4_code_tensor().to(device());
  nlohmann::json state = {{"quant_type", "nf4"},
                          {"blocksize", options_.block_size},
                          {"dtype", "float32"},
                          {"shape", {out_features_, in_features_}}};
  if (options_.double_quantization) {
    tensors[weight_key + ".absmax"] = double_absmax_.centred.codes;
    tensors[weight_key + ".nested_absmax"] = double_absmax_.centred.absmax;
    tensors[weight_key + ".nested_quant_map"] = double_absmax_.centred.code;
    state["nested_blocksize"] = kDoubleQuantBlockSize;
    state["nested_dtype"] = "float32";
    state["nested_offset"] = static_cast<double>(double_absmax_.offset);
  } else {
    tensors[weight_key + ".absmax"] = absmax_;
  }
  tensors[weight_key + ".quant_state.bitsandbytes__nf4"] = json_as_bytes(state);
  return tensors;
}

QuantizedLinearWeight QuantizedLinearWeight::from_state_dict(const std::map<std::string, torch::Tensor>& tensors,
                                                             const std::string& weight_key) {
  QuantizedLinearWeight result;
  const std::string state_key = weight_key + ".quant_state.bitsandbytes__nf4";
  if (tensors.count(weight_key + ".quant_state.bitsandbytes__fp4") != 0) {
    bad_state(weight_key, "FP4 quantization is not supported; n3rlhf reads NF4 (4-bit) and int8 row-wise (8-bit)");
  }
  const torch::Tensor& weight = require(tensors, weight_key);
  if (tensors.count(state_key) == 0) {
    // 8-bit: int8 codes [out, in] and the row absmax beside them.
    const torch::Tensor& scales = require(tensors, scale_key_for(weight_key));
    if (weight.scalar_type() != torch::kInt8 || weight.dim() != 2 || scales.numel() != weight.size(0)) {
      bad_state(weight_key, "an 8-bit weight is int8 [out, in] with one SCB value per row");
    }
    result.options_.bits = 8;
    result.options_.double_quantization = false;
    result.out_features_ = weight.size(0);
    result.in_features_ = weight.size(1);
    result.int8_codes_ = weight;
    result.row_absmax_ = scales.to(torch::kFloat32);
    return result;
  }
  const nlohmann::json state = bytes_as_json(tensors.at(state_key), state_key);
  try {
    result.options_.bits = 4;
    result.options_.block_size = state.at("blocksize").get<int64_t>();
    const auto shape = state.at("shape").get<std::vector<int64_t>>();
    if (shape.size() != 2) bad_state(weight_key, "a linear weight has 2 dimensions");
    result.out_features_ = shape[0];
    result.in_features_ = shape[1];
    result.options_.double_quantization = state.contains("nested_offset");
    if (result.options_.double_quantization) {
      result.double_absmax_.offset = static_cast<float>(state.at("nested_offset").get<double>());
      const int64_t nested_block = state.at("nested_blocksize").get<int64_t>();
      result.double_absmax_.centred.block_size = nested_block;
    }
  } catch (const nlohmann::json::exception& error) {
    bad_state(weight_key, std::string("quant_state: ") + error.what());
  }
  try {
    validate(result.options_);
  } catch (const ConfigurationError& error) {
    bad_state(weight_key, error.message());
  }
  const int64_t numel = result.out_features_ * result.in_features_;
  const int64_t blocks = (numel + result.options_.block_size - 1) / result.options_.block_size;
  result.packed_ = weight.reshape({-1});
  if (result.packed_.scalar_type() != torch::kUInt8 || result.packed_.numel() != (numel + 1) / 2) {
    bad_state(weight_key, "4-bit codes are uint8, two per byte, for the shape in quant_state");
  }
  const torch::Tensor& quant_map = require(tensors, weight_key + ".quant_map");
  if (!torch::equal(quant_map.to(torch::kCPU, torch::kFloat32), nf4_code_tensor())) {
    bad_state(weight_key, "quant_map is not bitsandbytes' NF4 table");
  }
  const torch::Tensor& absmax = require(tensors, weight_key + ".absmax");
  if (absmax.numel() != blocks) bad_state(weight_key, "absmax does not have one value per block");
  if (result.options_.double_quantization) {
    BlockwiseQuantized8& centred = result.double_absmax_.centred;
    centred.codes = absmax.reshape({-1});
    centred.absmax = require(tensors, weight_key + ".nested_absmax").to(torch::kFloat32);
    centred.code = require(tensors, weight_key + ".nested_quant_map").to(torch::kFloat32);
    const int64_t nested_blocks = (blocks + centred.block_size - 1) / centred.block_size;
    if (centred.codes.scalar_type() != torch::kUInt8 || centred.absmax.numel() != nested_blocks ||
        centred.code.numel() != 256) {
      bad_state(weight_key, "double-quantized absmax, nested_absmax and nested_quant_map do not fit together");
    }
  } else {
    result.absmax_ = absmax.to(torch::kFloat32).reshape({-1});
  }
  return result;
}

torch::Tensor QuantizedLinearFunction::forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                                               const QuantizedLinearWeight& weight) {
  // Only the quantized tensors are saved: the dequantized W is a temporary of this call.
  ctx->save_for_backward(weight.saved_tensors());
  ctx->saved_data["layout"] = weight.saved_layout();
  const torch::Tensor dense = weight.dequantize(input.scalar_type());
  return torch::linear(input, dense);
}

torch::autograd::variable_list QuantizedLinearFunction::backward(torch::autograd::AutogradContext* ctx,
                                                                 torch::autograd::variable_list grad_outputs) {
  const torch::Tensor& grad_output = grad_outputs[0];
  torch::Tensor grad_input;
  if (ctx->needs_input_grad(0)) {
    const QuantizedLinearWeight weight =
        QuantizedLinearWeight::from_saved(ctx->get_saved_variables(), ctx->saved_data["layout"].toIntVector());
    grad_input = grad_output.matmul(weight.dequantize(grad_output.scalar_type()));
  }
  return {grad_input, torch::Tensor()};
}

}  // namespace n3rlhf::quant
