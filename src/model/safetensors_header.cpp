// safetensors_header.cpp: the validating safetensors header parser (a streaming JSON reader that
// only accepts the safetensors schema) and the reference-compatible header encoder.
#include "model/safetensors_header.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

struct DtypeTraits {
  std::string_view name;
  size_t size;
  // Position in the reference writer's dtype enum; the writer orders tensors by it, descending.
  int writer_rank;
};

constexpr DtypeTraits kDtypes[] = {
    {"BOOL", 1, 0},    {"U8", 1, 1},   {"I8", 1, 2},    {"F8_E5M2", 1, 3}, {"F8_E4M3", 1, 4},
    {"I16", 2, 5},     {"U16", 2, 6},  {"F16", 2, 7},   {"BF16", 2, 8},    {"I32", 4, 9},
    {"U32", 4, 10},    {"F32", 4, 11}, {"F64", 8, 12},  {"I64", 8, 13},    {"U64", 8, 14},
};

const DtypeTraits* find_dtype(std::string_view name) {
  for (const DtypeTraits& traits : kDtypes) {
    if (traits.name == name) return &traits;
  }
  return nullptr;
}

std::string supported_dtype_list() {
  std::string list;
  for (const DtypeTraits& traits : kDtypes) {
    if (!list.empty()) list += ", ";
    list += traits.name;
  }
  return list;
}

// Rank cap: torch tensors are far below it, and it bounds what a hostile header can make us store.
constexpr size_t kMaxRank = 64;

[[noreturn]] void fail_load(const std::string& file, const std::string& tensor, const std::string& message) {
  ErrorContext context{{"file", file}};
  if (!tensor.empty()) context.emplace_back("tensor", tensor);
  throw ModelError(ErrorCode::kModelLoadFailure, message, std::move(context));
}

[[noreturn]] void fail_save(const std::string& tensor, const std::string& message) {
  ErrorContext context;
  if (!tensor.empty()) context.emplace_back("tensor", tensor);
  throw_error(ErrorCode::kCheckpointSaveFailure, message, std::move(context));
}

bool checked_multiply(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// Byte count of a tensor, or false when it overflows 64 bits. A zero dimension makes it 0 however
// large the others are.
bool tensor_byte_count(const std::vector<int64_t>& shape, size_t element_size, uint64_t* bytes) {
  uint64_t count = 1;
  for (int64_t dim : shape) {
    if (dim == 0) {
      *bytes = 0;
      return true;
    }
  }
  for (int64_t dim : shape) {
    if (!checked_multiply(count, static_cast<uint64_t>(dim), &count)) return false;
  }
  return checked_multiply(count, element_size, bytes);
}

// A SAX consumer of the header JSON that accepts exactly the safetensors schema:
//   {"__metadata__": {str: str} | null, NAME: {"dtype": str, "shape": [uint...], "data_offsets": [uint, uint]}, ...}
// Streaming rather than building a DOM lets it reject deep nesting, duplicate keys (which a DOM
// silently collapses) and wrong types at the first offending token.
class HeaderReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit HeaderReader(SafetensorsHeader* header) : header_(header) {}

  // The first schema violation; empty when the JSON was accepted.
  const std::string& error() const { return error_; }
  // The tensor being read when the error happened (empty when none).
  const std::string& error_tensor() const { return error_tensor_; }

  bool null() override {
    if (state_ == State::kTopValue && in_metadata_key_) {
      state_ = State::kTop;
      return true;
    }
    return unexpected("null");
  }
  bool boolean(bool) override { return unexpected("a boolean"); }
  bool number_integer(number_integer_t value) override {
    if (value < 0) return unexpected("a negative number");
    return unsigned_number(static_cast<uint64_t>(value));
  }
  bool number_unsigned(number_unsigned_t value) override { return unsigned_number(value); }
  bool number_float(number_float_t, const string_t&) override {
    return unexpected("a non-integer number (or one too large for 64 bits)");
  }
  bool binary(binary_t&) override { return unexpected("binary data"); }

  bool string(string_t& value) override {
    if (state_ == State::kTensorValue && field_ == Field::kDtype) {
      tensor_.dtype = value;
      state_ = State::kTensor;
      return true;
    }
    if (state_ == State::kMetadataValue) {
      header_->metadata[metadata_key_] = value;
      state_ = State::kMetadata;
      return true;
    }
    return unexpected("a string");
  }

  bool start_object(std::size_t) override {
    switch (state_) {
      case State::kStart:
        state_ = State::kTop;
        return true;
      case State::kTopValue:
        if (in_metadata_key_) {
          state_ = State::kMetadata;
        } else {
          state_ = State::kTensor;
          seen_fields_.clear();
        }
        return true;
      default:
        return unexpected("an object");
    }
  }

  bool key(string_t& key) override {
    switch (state_) {
      case State::kTop:
        if (!top_keys_.insert(key).second) {
          return fail(key == "__metadata__" ? "duplicate \"__metadata__\" entry" : "duplicate tensor name", key);
        }
        in_metadata_key_ = key == "__metadata__";
        tensor_ = SafetensorsTensorInfo{};
        tensor_.name = key;
        state_ = State::kTopValue;
        return true;
      case State::kTensor: {
        if (key == "dtype") {
          field_ = Field::kDtype;
        } else if (key == "shape") {
          field_ = Field::kShape;
        } else if (key == "data_offsets") {
          field_ = Field::kOffsets;
        } else {
          return fail("unknown field \"" + key + "\" in the tensor entry (expected dtype, shape, data_offsets)", tensor_.name);
        }
        if (!seen_fields_.insert(key).second) return fail("duplicate field \"" + key + "\" in the tensor entry", tensor_.name);
        state_ = State::kTensorValue;
        return true;
      }
      case State::kMetadata:
        if (!metadata_keys_.insert(key).second) return fail("duplicate key \"" + key + "\" in __metadata__", "");
        metadata_key_ = key;
        state_ = State::kMetadataValue;
        return true;
      default:
        return unexpected("a key");
    }
  }

  bool end_object() override {
    switch (state_) {
      case State::kTop:
        state_ = State::kDone;
        return true;
      case State::kMetadata:
        state_ = State::kTop;
        return true;
      case State::kTensor:
        for (const char* field : {"dtype", "shape", "data_offsets"}) {
          if (seen_fields_.count(field) == 0) return fail(std::string("tensor entry has no \"") + field + "\" field", tensor_.name);
        }
        header_->tensors.push_back(std::move(tensor_));
        tensor_ = SafetensorsTensorInfo{};
        state_ = State::kTop;
        return true;
      default:
        return unexpected("the end of an object");
    }
  }

  bool start_array(std::size_t) override {
    if (state_ == State::kTensorValue && field_ == Field::kShape) {
      state_ = State::kShape;
      return true;
    }
    if (state_ == State::kTensorValue && field_ == Field::kOffsets) {
      state_ = State::kOffsets;
      offsets_seen_ = 0;
      return true;
    }
    return unexpected("an array");
  }

  bool end_array() override {
    if (state_ == State::kShape) {
      state_ = State::kTensor;
      return true;
    }
    if (state_ == State::kOffsets) {
      if (offsets_seen_ != 2) return fail("data_offsets must hold exactly two numbers [begin, end]", tensor_.name);
      state_ = State::kTensor;
      return true;
    }
    return unexpected("the end of an array");
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& error) override {
    if (error_.empty()) {
      error_ = "invalid JSON in the header at byte " + std::to_string(position) + ": " + error.what();
      if (state_ != State::kTop && state_ != State::kStart && !in_metadata_key_) error_tensor_ = tensor_.name;
    }
    return false;
  }

 private:
  enum class State { kStart, kTop, kTopValue, kTensor, kTensorValue, kShape, kOffsets, kMetadata, kMetadataValue, kDone };
  enum class Field { kDtype, kShape, kOffsets };

  bool unsigned_number(uint64_t value) {
    if (state_ == State::kShape) {
      if (tensor_.shape.size() == kMaxRank) return fail("shape has more than " + std::to_string(kMaxRank) + " dimensions", tensor_.name);
      if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return fail("dimension " + std::to_string(value) + " does not fit in int64", tensor_.name);
      }
      tensor_.shape.push_back(static_cast<int64_t>(value));
      return true;
    }
    if (state_ == State::kOffsets) {
      if (offsets_seen_ == 2) return fail("data_offsets must hold exactly two numbers [begin, end]", tensor_.name);
      (offsets_seen_ == 0 ? tensor_.data_begin : tensor_.data_end) = value;
      ++offsets_seen_;
      return true;
    }
    return unexpected("a number");
  }

  // Describes what the schema expected at this point, for a message that helps find the fault.
  std::string expectation() const {
    switch (state_) {
      case State::kStart: return "the header must be a JSON object";
      case State::kTop: return "expected a tensor name or the end of the header object";
      case State::kTopValue:
        return in_metadata_key_ ? "__metadata__ must be an object of strings" : "a tensor entry must be an object";
      case State::kTensor: return "expected a field of the tensor entry";
      case State::kTensorValue:
        switch (field_) {
          case Field::kDtype: return "dtype must be a string";
          case Field::kShape: return "shape must be an array of non-negative integers";
          case Field::kOffsets: return "data_offsets must be an array of two non-negative integers";
        }
        return "";
      case State::kShape: return "shape must be an array of non-negative integers";
      case State::kOffsets: return "data_offsets must be an array of two non-negative integers";
      case State::kMetadata: return "expected a key of __metadata__";
      case State::kMetadataValue: return "__metadata__ values must be strings";
      case State::kDone: return "nothing may follow the header object";
    }
    return "";
  }

  bool unexpected(const std::string& what) {
    const bool about_tensor = state_ == State::kTensor || state_ == State::kTensorValue || state_ == State::kShape ||
                              state_ == State::kOffsets || (state_ == State::kTopValue && !in_metadata_key_);
    return fail(expectation() + ", found " + what, about_tensor ? tensor_.name : "");
  }

  bool fail(const std::string& message, const std::string& tensor) {
    if (error_.empty()) {
      error_ = message;
      error_tensor_ = tensor;
    }
    return false;
  }

  SafetensorsHeader* header_;
  State state_ = State::kStart;
  Field field_ = Field::kDtype;
  bool in_metadata_key_ = false;
  SafetensorsTensorInfo tensor_;
  int offsets_seen_ = 0;
  std::set<std::string> top_keys_;
  std::set<std::string> seen_fields_;
  std::set<std::string> metadata_keys_;
  std::string metadata_key_;
  std::string error_;
  std::string error_tensor_;
};

void check_tensor_ranges(SafetensorsHeader& header, uint64_t data_size, const std::string& file) {
  for (const SafetensorsTensorInfo& tensor : header.tensors) {
    const DtypeTraits* dtype = find_dtype(tensor.dtype);
    if (dtype == nullptr) {
      fail_load(file, tensor.name, "unknown or unsupported dtype \"" + tensor.dtype + "\" (supported: " + supported_dtype_list() + ")");
    }
    uint64_t expected_bytes = 0;
    if (!tensor_byte_count(tensor.shape, dtype->size, &expected_bytes)) {
      fail_load(file, tensor.name, "shape is too large: its byte count overflows 64 bits");
    }
    if (tensor.data_end < tensor.data_begin) {
      fail_load(file, tensor.name, "data_offsets [" + std::to_string(tensor.data_begin) + ", " + std::to_string(tensor.data_end) +
                                       "] end before they begin");
    }
    const uint64_t stored_bytes = tensor.data_end - tensor.data_begin;
    if (stored_bytes != expected_bytes) {
      fail_load(file, tensor.name, "shape and dtype make " + std::to_string(expected_bytes) + " bytes but data_offsets hold " +
                                       std::to_string(stored_bytes));
    }
    if (tensor.data_end > data_size) {
      fail_load(file, tensor.name, "data_offsets [" + std::to_string(tensor.data_begin) + ", " + std::to_string(tensor.data_end) +
                                       "] run past the end of the data section (" + std::to_string(data_size) +
                                       " bytes); is the file truncated?");
    }
  }
  std::sort(header.tensors.begin(), header.tensors.end(), [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
    return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
  });
  // The reference format has no padding between tensors: the ranges tile the data section.
  uint64_t covered = 0;
  const SafetensorsTensorInfo* previous = nullptr;
  for (const SafetensorsTensorInfo& tensor : header.tensors) {
    if (tensor.data_begin < covered) {
      fail_load(file, tensor.name, "byte range [" + std::to_string(tensor.data_begin) + ", " + std::to_string(tensor.data_end) +
                                       ") overlaps tensor \"" + (previous ? previous->name : std::string()) + "\"");
    }
    if (tensor.data_begin > covered) {
      fail_load(file, tensor.name, "gap of " + std::to_string(tensor.data_begin - covered) + " unused bytes before this tensor's data");
    }
    covered = tensor.data_end;
    previous = &tensor;
  }
  if (covered != data_size) {
    fail_load(file, previous ? previous->name : std::string(),
              std::to_string(data_size - covered) + " bytes after the last tensor's data belong to no tensor");
  }
}

}  // namespace

size_t safetensors_dtype_size(std::string_view dtype) {
  const DtypeTraits* traits = find_dtype(dtype);
  return traits ? traits->size : 0;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& file_name) {
  if (size < 8) {
    fail_load(file_name, "", "file is " + std::to_string(size) + " bytes, too short to hold the 8-byte header length; is it truncated?");
  }
  uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | data[i];  // little-endian on every host
  if (header_length > kSafetensorsMaxHeaderBytes) {
    fail_load(file_name, "", "header length " + std::to_string(header_length) + " exceeds the limit of " +
                                 std::to_string(kSafetensorsMaxHeaderBytes) + " bytes; not a safetensors file?");
  }
  if (header_length > size - 8) {
    fail_load(file_name, "", "header length " + std::to_string(header_length) + " is larger than the " + std::to_string(size - 8) +
                                 " bytes that follow it; is the file truncated?");
  }
  const char* json_begin = reinterpret_cast<const char*>(data + 8);
  const char* json_end = json_begin + header_length;
  if (header_length == 0 || json_begin[0] != '{') {
    fail_load(file_name, "", "header does not start with '{': not a safetensors file?");
  }

  // JSON readers stop at a NUL byte as if the input ended there; the reference rejects it.
  if (const void* nul = std::memchr(json_begin, '\0', header_length)) {
    fail_load(file_name, "", "header has a NUL byte at offset " +
                                 std::to_string(8 + (static_cast<const char*>(nul) - json_begin)) + "; is the file corrupt?");
  }
  SafetensorsHeader header;
  header.data_offset = 8 + header_length;
  HeaderReader reader(&header);
  const bool accepted = nlohmann::json::sax_parse(json_begin, json_end, &reader, nlohmann::json::input_format_t::json,
                                                  /*strict=*/true, /*ignore_comments=*/false);
  if (!accepted) {
    fail_load(file_name, reader.error_tensor(), reader.error().empty() ? "invalid safetensors header" : reader.error());
  }
  check_tensor_ranges(header, size - header.data_offset, file_name);
  return header;
}

std::vector<SafetensorsTensorInfo> layout_safetensors_tensors(std::vector<SafetensorsTensorInfo> tensors) {
  std::set<std::string_view> names;
  for (const SafetensorsTensorInfo& tensor : tensors) {
    if (find_dtype(tensor.dtype) == nullptr) fail_save(tensor.name, "cannot write dtype \"" + tensor.dtype + "\"");
    if (!names.insert(tensor.name).second) fail_save(tensor.name, "two tensors are named \"" + tensor.name + "\"");
    if (tensor.name == "__metadata__") fail_save(tensor.name, "\"__metadata__\" is reserved for the header's metadata");
    for (int64_t dim : tensor.shape) {
      if (dim < 0) fail_save(tensor.name, "negative dimension in the shape");
    }
  }
  std::sort(tensors.begin(), tensors.end(), [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
    const int rank_a = find_dtype(a.dtype)->writer_rank;
    const int rank_b = find_dtype(b.dtype)->writer_rank;
    if (rank_a != rank_b) return rank_a > rank_b;
    return a.name < b.name;
  });
  uint64_t offset = 0;
  for (SafetensorsTensorInfo& tensor : tensors) {
    uint64_t bytes = 0;
    if (!tensor_byte_count(tensor.shape, find_dtype(tensor.dtype)->size, &bytes) ||
        offset + bytes < offset) {
      fail_save(tensor.name, "tensor size overflows 64 bits");
    }
    tensor.data_begin = offset;
    tensor.data_end = offset + bytes;
    offset = tensor.data_end;
  }
  return tensors;
}

std::string encode_safetensors_header(const std::vector<SafetensorsTensorInfo>& tensors,
                                      const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps insertion order: the reference writes __metadata__ first, then the tensors
  // in data order, and keys within an entry as dtype, shape, data_offsets.
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json entries = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) entries[key] = value;
    json["__metadata__"] = std::move(entries);
  }
  for (const SafetensorsTensorInfo& tensor : tensors) {
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = tensor.dtype;
    entry["shape"] = tensor.shape;
    entry["data_offsets"] = {tensor.data_begin, tensor.data_end};
    if (json.contains(tensor.name)) fail_save(tensor.name, "the name appears twice (or is the reserved \"__metadata__\")");
    json[tensor.name] = std::move(entry);
  }
  std::string text;
  try {
    text = json.dump();
  } catch (const nlohmann::json::exception& error) {
    fail_save("", std::string("a tensor name or metadata string is not valid UTF-8: ") + error.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string bytes(8, '\0');
  uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes + text;
}

}  // namespace n3rlhf
