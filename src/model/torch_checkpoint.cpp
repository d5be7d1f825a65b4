// torch_checkpoint.cpp: the zip archive through libtorch's PyTorchStreamReader (data.pkl and the
// data/<key> storage records), and a pickle machine for the opcodes torch.save emits for a state
// dict (protocol 2, and the protocol 4 framing and memo opcodes).
#include "model/torch_checkpoint.hpp"

#include <caffe2/serialize/inline_container.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <vector>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw ModelError(ErrorCode::kModelLoadFailure, path + ": " + message, {{"file", path}});
}

struct PickleValue;
using ValuePtr = std::shared_ptr<PickleValue>;

struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;                                    // a string, or a global's "module.name"
  std::vector<ValuePtr> items;                         // tuple, list
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;  // dict, in insertion order
  torch::Tensor tensor;                                // storage (1-D, its dtype) or tensor
};

ValuePtr make(PickleValue::Kind kind) {
  auto value = std::make_shared<PickleValue>();
  value->kind = kind;
  return value;
}

// The dtype of a typed storage class torch.save names ("torch.FloatStorage").
std::optional<torch::ScalarType> storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> dtypes = {
      {"torch.FloatStorage", torch::kFloat32},  {"torch.DoubleStorage", torch::kFloat64}, {"torch.HalfStorage", torch::kFloat16},
      {"torch.BFloat16Storage", torch::kBFloat16}, {"torch.LongStorage", torch::kInt64},  {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},    {"torch.CharStorage", torch::kInt8},     {"torch.ByteStorage", torch::kUInt8},
      {"torch.BoolStorage", torch::kBool},      {"torch.UntypedStorage", torch::kUInt8}};
  const auto found = dtypes.find(name);
  if (found == dtypes.end()) return std::nullopt;
  return found->second;
}

class StateDictUnpickler {
 public:
  StateDictUnpickler(std::string path, caffe2::serialize::PyTorchStreamReader& archive, const std::vector<char>& pickle)
      : path_(std::move(path)), archive_(archive), data_(pickle) {}

  ValuePtr run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;              // PROTO
        case 0x95: bytes(8); break;            // FRAME (its length is not needed)
        case '(': marks_.push_back(stack_.size()); break;
        case '.': return pop();                // STOP
        case 'N': push(make(PickleValue::Kind::kNone)); break;
        case 0x88: case 0x89: {                // NEWTRUE, NEWFALSE
          ValuePtr value = make(PickleValue::Kind::kBool);
          value->integer = op == 0x88;
          push(value);
          break;
        }
        case 'J': push_int(signed_le(4)); break;
        case 'K': push_int(signed_le(1, false)); break;
        case 'M': push_int(signed_le(2, false)); break;
        case 0x8a: {                           // LONG1
          const uint8_t length = byte();
          if (length > 8) fail(path_, "a pickled integer does not fit in 64 bits");
          push_int(length == 0 ? 0 : signed_le(length));
          break;
        }
        case 'G': {                            // BINFLOAT, big-endian
          const std::string raw = bytes(8);
          uint64_t bits = 0;
          for (unsigned char c : raw) bits = (bits << 8) | c;
          ValuePtr value = make(PickleValue::Kind::kFloat);
          std::memcpy(&value->number, &bits, sizeof bits);
          push(value);
          break;
        }
        case 'X': push_string(bytes(static_cast<size_t>(unsigned_le(4)))); break;   // BINUNICODE
        case 0x8c: push_string(bytes(byte())); break;                              // SHORT_BINUNICODE
        case 0x8d: push_string(bytes(static_cast<size_t>(unsigned_le(8)))); break;  // BINUNICODE8
        case 'T': push_string(bytes(static_cast<size_t>(unsigned_le(4)))); break;   // BINSTRING
        case 'U': push_string(bytes(byte())); break;                               // SHORT_BINSTRING
        case '}': push(make(PickleValue::Kind::kDict)); break;
        case ']': push(make(PickleValue::Kind::kList)); break;
        case ')': push(make(PickleValue::Kind::kTuple)); break;
        case 'l': { ValuePtr list = make(PickleValue::Kind::kList); list->items = pop_to_mark(); push(list); break; }
        case 't': { ValuePtr tuple = make(PickleValue::Kind::kTuple); tuple->items = pop_to_mark(); push(tuple); break; }
        case 0x85: case 0x86: case 0x87: {     // TUPLE1..3
          ValuePtr tuple = make(PickleValue::Kind::kTuple);
          tuple->items.resize(static_cast<size_t>(op - 0x84));
          for (size_t i = tuple->items.size(); i-- > 0;) tuple->items[i] = pop();
          push(tuple);
          break;
        }
        case 'a': { ValuePtr item = pop(); expect(top(), PickleValue::Kind::kList, "APPEND")->items.push_back(item); break; }
        case 'e': {
          std::vector<ValuePtr> items = pop_to_mark();
          ValuePtr list = expect(top(), PickleValue::Kind::kList, "APPENDS");
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case 's': {
          ValuePtr value = pop(), key = pop();
          expect(top(), PickleValue::Kind::kDict, "SETITEM")->entries.emplace_back(key, value);
          break;
        }
        case 'u': {
          std::vector<ValuePtr> items = pop_to_mark();
          if (items.size() % 2 != 0) fail(path_, "malformed pickle: SETITEMS with an odd number of items");
          ValuePtr dict = expect(top(), PickleValue::Kind::kDict, "SETITEMS");
          for (size_t i = 0; i < items.size(); i += 2) dict->entries.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'q': memo_[byte()] = top(); break;                                  // BINPUT
        case 'r': memo_[static_cast<uint32_t>(unsigned_le(4))] = top(); break;   // LONG_BINPUT
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;    // MEMOIZE
        case 'h': push(memo(byte())); break;                                     // BINGET
        case 'j': push(memo(static_cast<uint32_t>(unsigned_le(4)))); break;      // LONG_BINGET
        case 'c': {                                                              // GLOBAL
          const std::string module = line(), name = line();
          push_global(module + "." + name);
          break;
        }
        case 0x93: {                                                             // STACK_GLOBAL
          const ValuePtr name = expect(pop(), PickleValue::Kind::kString, "STACK_GLOBAL");
          const ValuePtr module = expect(pop(), PickleValue::Kind::kString, "STACK_GLOBAL");
          push_global(module->text + "." + name->text);
          break;
        }
        case 'Q': push(storage(pop())); break;                                   // BINPERSID
        case 'R': {                                                              // REDUCE
          const ValuePtr args = expect(pop(), PickleValue::Kind::kTuple, "REDUCE");
          const ValuePtr callable = expect(pop(), PickleValue::Kind::kGlobal, "REDUCE");
          push(reduce(callable->text, args->items));
          break;
        }
        case 'b': pop(); break;  // BUILD: an OrderedDict's state (state_dict's _metadata) or a tensor's; not needed
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(path_, std::string("the pickle uses opcode ") + hex + ", which a state dict does not need");
        }
      }
    }
  }

 private:
  uint8_t byte() {
    if (position_ >= data_.size()) fail(path_, "the pickle ends early (truncated data.pkl)");
    return static_cast<uint8_t>(data_[position_++]);
  }
  std::string bytes(size_t count) {
    if (count > data_.size() - position_) fail(path_, "the pickle ends early (truncated data.pkl)");
    std::string out(data_.data() + position_, count);
    position_ += count;
    return out;
  }
  uint64_t unsigned_le(size_t count) {
    const std::string raw = bytes(count);
    uint64_t value = 0;
    for (size_t i = count; i-- > 0;) value = (value << 8) | static_cast<unsigned char>(raw[i]);
    return value;
  }
  int64_t signed_le(size_t count, bool is_signed = true) {
    const uint64_t raw = unsigned_le(count);
    if (!is_signed || count == 8 || (raw >> (count * 8 - 1)) == 0) return static_cast<int64_t>(raw);
    return static_cast<int64_t>(raw | (~uint64_t{0} << (count * 8)));
  }
  std::string line() {
    std::string out;
    for (uint8_t c = byte(); c != '\n'; c = byte()) {
      out.push_back(static_cast<char>(c));
      if (out.size() > 256) fail(path_, "malformed pickle: a global name is too long");
    }
    return out;
  }

  void push(ValuePtr value) { stack_.push_back(std::move(value)); }
  void push_int(int64_t integer) {
    ValuePtr value = make(PickleValue::Kind::kInt);
    value->integer = integer;
    push(value);
  }
  void push_string(std::string text) {
    ValuePtr value = make(PickleValue::Kind::kString);
    value->text = std::move(text);
    push(value);
  }
  void push_global(std::string name) {
    ValuePtr value = make(PickleValue::Kind::kGlobal);
    value->text = std::move(name);
    push(value);
  }
  ValuePtr pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail(path_, "malformed pickle: the stack runs empty");
    ValuePtr value = stack_.back();
    stack_.pop_back();
    return value;
  }
  const ValuePtr& top() {
    if (stack_.empty()) fail(path_, "malformed pickle: the stack runs empty");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_to_mark() {
    if (marks_.empty()) fail(path_, "malformed pickle: no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  ValuePtr memo(uint32_t key) {
    const auto found = memo_.find(key);
    if (found == memo_.end()) fail(path_, "malformed pickle: a memo entry is read before it is written");
    return found->second;
  }
  ValuePtr expect(const ValuePtr& value, PickleValue::Kind kind, const char* where) {
    if (value->kind != kind) fail(path_, std::string("the pickle is not a state dict (unexpected value at ") + where + ")");
    return value;
  }
  int64_t integer(const ValuePtr& value, const char* what) {
    if (value->kind != PickleValue::Kind::kInt) fail(path_, std::string("the pickle is not a state dict (") + what + " is not an integer)");
    return value->integer;
  }
  std::vector<int64_t> integers(const ValuePtr& value, const char* what) {
    expect(value, PickleValue::Kind::kTuple, what);
    std::vector<int64_t> out;
    for (const ValuePtr& item : value->items) out.push_back(integer(item, what));
    return out;
  }

  // ('storage', <storage class>, key, location, numel): the record data/<key> of the archive.
  ValuePtr storage(const ValuePtr& id) {
    expect(id, PickleValue::Kind::kTuple, "a persistent id");
    if (id->items.size() != 5 || id->items[0]->kind != PickleValue::Kind::kString || id->items[0]->text != "storage" ||
        id->items[1]->kind != PickleValue::Kind::kGlobal || id->items[2]->kind != PickleValue::Kind::kString) {
      fail(path_, "the pickle refers to something other than a tensor storage");
    }
    const std::optional<torch::ScalarType> dtype = storage_dtype(id->items[1]->text);
    if (!dtype) fail(path_, "unsupported storage type " + id->items[1]->text);
    const std::string key = id->items[2]->text;
    const int64_t numel = integer(id->items[4], "a storage's size");
    auto cached = storages_.find(key);
    if (cached == storages_.end()) {
      const std::string record = "data/" + key;
      if (!archive_.hasRecord(record)) fail(path_, "the archive has no record " + record + " (truncated?)");
      auto [pointer, size] = archive_.getRecord(record);
      const int64_t item_size = static_cast<int64_t>(c10::elementSize(*dtype));
      if (numel < 0 || static_cast<uint64_t>(numel) * static_cast<uint64_t>(item_size) > size) {
        fail(path_, "storage " + key + " is smaller than its " + std::to_string(numel) + " elements");
      }
      auto owner = std::make_shared<at::DataPtr>(std::move(pointer));
      void* raw = owner->get();
      torch::Tensor tensor = torch::from_blob(raw, {numel}, [owner](void*) {}, torch::TensorOptions().dtype(*dtype));
      cached = storages_.emplace(key, tensor).first;
    } else if (cached->second.numel() != numel || cached->second.scalar_type() != *dtype) {
      fail(path_, "storage " + key + " is named with two sizes or types");
    }
    ValuePtr value = make(PickleValue::Kind::kStorage);
    value->tensor = cached->second;
    return value;
  }

  ValuePtr reduce(const std::string& callable, const std::vector<ValuePtr>& args) {
    if (callable == "collections.OrderedDict") return make(PickleValue::Kind::kDict);  // a state dict, or a tensor's empty hooks
    if (callable == "torch._utils._rebuild_tensor_v2" || callable == "torch._utils._rebuild_tensor") {
      if (args.size() < 4 || args[0]->kind != PickleValue::Kind::kStorage) fail(path_, "malformed tensor in the pickle");
      const int64_t offset = integer(args[1], "a tensor's storage offset");
      const std::vector<int64_t> size = integers(args[2], "a tensor's size");
      const std::vector<int64_t> stride = integers(args[3], "a tensor's stride");
      if (size.size() != stride.size()) fail(path_, "a tensor's size and stride differ in length");
      const torch::Tensor& storage = args[0]->tensor;
      int64_t last = offset;
      bool empty = false;
      for (size_t i = 0; i < size.size(); ++i) {
        if (size[i] < 0 || stride[i] < 0) fail(path_, "a tensor has a negative size or stride");
        if (size[i] == 0) empty = true;
        else last += (size[i] - 1) * stride[i];
      }
      if (offset < 0 || (!empty && last >= storage.numel())) fail(path_, "a tensor reaches past the end of its storage");
      ValuePtr value = make(PickleValue::Kind::kTensor);
      value->tensor = empty ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
      return value;
    }
    if (callable == "torch._utils._rebuild_parameter" || callable == "torch._utils._rebuild_parameter_with_state") {
      if (args.empty() || args[0]->kind != PickleValue::Kind::kTensor) fail(path_, "malformed parameter in the pickle");
      return args[0];
    }
    fail(path_, "the pickle calls " + callable + ", which a state dict of tensors does not need; it is not run");
  }

  std::string path_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  const std::vector<char>& data_;
  size_t position_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, ValuePtr> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

}  // namespace

std::map<std::string, torch::Tensor> read_torch_state_dict(const std::string& path) {
  char magic[2] = {0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open the file");
    in.read(magic, 2);
  }
  if (static_cast<unsigned char>(magic[0]) == 0x80) {
    fail(path, "a legacy torch.save file (the pickle format of PyTorch before 1.6, or _use_new_zipfile_serialization=False); "
               "n3rlhf reads the zip format: load it in Python and save it again with save_pretrained() (safetensors) or torch.save()");
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  std::vector<char> pickle;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (archive->hasRecord("byteorder")) {
      auto [pointer, size] = archive->getRecord("byteorder");
      const std::string order(static_cast<const char*>(pointer.get()), size);
      if (order != "little") fail(path, "the tensors are stored " + order + "-endian");
    }
    if (!archive->hasRecord("data.pkl")) fail(path, "not a torch.save archive: no data.pkl record");
    auto [pointer, size] = archive->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(pointer.get()), static_cast<const char*>(pointer.get()) + size);
  } catch (const c10::Error& error) {
    fail(path, "truncated or not a torch.save zip archive: " + std::string(error.what_without_backtrace()));
  }
  std::map<std::string, torch::Tensor> tensors;
  try {
    StateDictUnpickler unpickler(path, *archive, pickle);
    const ValuePtr root = unpickler.run();
    if (root->kind != PickleValue::Kind::kDict) fail(path, "the pickle is not a dict of tensors");
    for (const auto& [key, value] : root->entries) {
      if (key->kind != PickleValue::Kind::kString || value->kind != PickleValue::Kind::kTensor) {
        fail(path, "the pickle is not a dict of names to tensors");
      }
      tensors[key->text] = value->tensor;
    }
  } catch (const c10::Error& error) {
    fail(path, "a record of the archive cannot be read (truncated?): " + std::string(error.what_without_backtrace()));
  }
  return tensors;
}

}  // namespace n3rlhf
