// pickled_state_dict.cpp: the state-dict unpickler (pickle protocols 2-5, the opcodes torch.save
// emits) over an arena of values, so that a pickle whose containers hold themselves neither leaks
// nor recurses.
#include "model/pickled_state_dict.hpp"

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <utility>

#include "core/error.hpp"

namespace n3rlhf {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& message) {
  throw ModelError(ErrorCode::kModelLoadFailure, path + ": " + message, {{"file", path}});
}

struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  Kind kind = Kind::kNone;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;                                            // a string, or a global's "module.name"
  std::vector<PickleValue*> items;                             // tuple, list
  std::vector<std::pair<PickleValue*, PickleValue*>> entries;  // dict, in insertion order
  PickledStorage storage;                                      // storage, or a tensor's storage
  int64_t offset = 0;                                          // tensor
  std::vector<int64_t> size, stride;                           // tensor
};

class StateDictUnpickler {
 public:
  StateDictUnpickler(const std::string& pickle, std::string path) : data_(pickle), path_(std::move(path)) {}

  PickleValue* run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;              // PROTO
        case 0x95: bytes(8); break;            // FRAME (its length is not needed)
        case '(': marks_.push_back(stack_.size()); break;
        case '.': return pop();                // STOP
        case 'N': push(make(PickleValue::Kind::kNone)); break;
        case 0x88: case 0x89: {                // NEWTRUE, NEWFALSE
          PickleValue* value = make(PickleValue::Kind::kBool);
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
          PickleValue* value = make(PickleValue::Kind::kFloat);
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
        case 'l': { PickleValue* list = make(PickleValue::Kind::kList); list->items = pop_to_mark(); push(list); break; }
        case 't': { PickleValue* tuple = make(PickleValue::Kind::kTuple); tuple->items = pop_to_mark(); push(tuple); break; }
        case 0x85: case 0x86: case 0x87: {     // TUPLE1..3
          PickleValue* tuple = make(PickleValue::Kind::kTuple);
          tuple->items.resize(static_cast<size_t>(op - 0x84));
          for (size_t i = tuple->items.size(); i-- > 0;) tuple->items[i] = pop();
          push(tuple);
          break;
        }
        case 'a': { PickleValue* item = pop(); expect(top(), PickleValue::Kind::kList, "APPEND")->items.push_back(item); break; }
        case 'e': {
          std::vector<PickleValue*> items = pop_to_mark();
          PickleValue* list = expect(top(), PickleValue::Kind::kList, "APPENDS");
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case 's': {
          PickleValue* value = pop();
          PickleValue* key = pop();
          expect(top(), PickleValue::Kind::kDict, "SETITEM")->entries.emplace_back(key, value);
          break;
        }
        case 'u': {
          std::vector<PickleValue*> items = pop_to_mark();
          if (items.size() % 2 != 0) fail(path_, "malformed pickle: SETITEMS with an odd number of items");
          PickleValue* dict = expect(top(), PickleValue::Kind::kDict, "SETITEMS");
          for (size_t i = 0; i < items.size(); i += 2) dict->entries.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'q': memo_[byte()] = top(); break;                                  // BINPUT
        case 'r': memo_[static_cast<uint32_t>(unsigned_le(4))] = top(); break;   // LONG_BINPUT
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;    // MEMOIZE
        case 'h': push(memo(byte())); break;                                     // BINGET
        case 'j': push(memo(static_cast<uint32_t>(unsigned_le(4)))); break;      // LONG_BINGET
        case 'c': {                                                              // GLOBAL
          const std::string module = line();
          const std::string name = line();
          push_global(module + "." + name);
          break;
        }
        case 0x93: {                                                             // STACK_GLOBAL
          const PickleValue* name = expect(pop(), PickleValue::Kind::kString, "STACK_GLOBAL");
          const PickleValue* module = expect(pop(), PickleValue::Kind::kString, "STACK_GLOBAL");
          push_global(module->text + "." + name->text);
          break;
        }
        case 'Q': push(storage(pop())); break;                                   // BINPERSID
        case 'R': {                                                              // REDUCE
          const PickleValue* args = expect(pop(), PickleValue::Kind::kTuple, "REDUCE");
          const PickleValue* callable = expect(pop(), PickleValue::Kind::kGlobal, "REDUCE");
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
  PickleValue* make(PickleValue::Kind kind) {
    arena_.push_back(std::make_unique<PickleValue>());
    arena_.back()->kind = kind;
    return arena_.back().get();
  }
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

  void push(PickleValue* value) { stack_.push_back(value); }
  void push_int(int64_t integer) {
    PickleValue* value = make(PickleValue::Kind::kInt);
    value->integer = integer;
    push(value);
  }
  void push_string(std::string text) {
    PickleValue* value = make(PickleValue::Kind::kString);
    value->text = std::move(text);
    push(value);
  }
  void push_global(std::string name) {
    PickleValue* value = make(PickleValue::Kind::kGlobal);
    value->text = std::move(name);
    push(value);
  }
  PickleValue* pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail(path_, "malformed pickle: the stack runs empty");
    PickleValue* value = stack_.back();
    stack_.pop_back();
    return value;
  }
  PickleValue* top() {
    if (stack_.empty()) fail(path_, "malformed pickle: the stack runs empty");
    return stack_.back();
  }
  std::vector<PickleValue*> pop_to_mark() {
    if (marks_.empty()) fail(path_, "malformed pickle: no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  PickleValue* memo(uint32_t key) {
    const auto found = memo_.find(key);
    if (found == memo_.end()) fail(path_, "malformed pickle: a memo entry is read before it is written");
    return found->second;
  }
  PickleValue* expect(PickleValue* value, PickleValue::Kind kind, const char* where) {
    if (value->kind != kind) fail(path_, std::string("the pickle is not a state dict (unexpected value at ") + where + ")");
    return value;
  }
  int64_t integer(const PickleValue* value, const char* what) {
    if (value->kind != PickleValue::Kind::kInt) fail(path_, std::string("the pickle is not a state dict (") + what + " is not an integer)");
    return value->integer;
  }
  std::vector<int64_t> integers(PickleValue* value, const char* what) {
    expect(value, PickleValue::Kind::kTuple, what);
    std::vector<int64_t> out;
    for (const PickleValue* item : value->items) out.push_back(integer(item, what));
    return out;
  }

  // ('storage', <storage class>, key, location, numel): the record data/<key> of the archive.
  PickleValue* storage(PickleValue* id) {
    expect(id, PickleValue::Kind::kTuple, "a persistent id");
    if (id->items.size() != 5 || id->items[0]->kind != PickleValue::Kind::kString || id->items[0]->text != "storage" ||
        id->items[1]->kind != PickleValue::Kind::kGlobal || id->items[2]->kind != PickleValue::Kind::kString) {
      fail(path_, "the pickle refers to something other than a tensor storage");
    }
    PickledStorage named{id->items[2]->text, id->items[1]->text, integer(id->items[4], "a storage's size")};
    if (named.numel < 0) fail(path_, "storage " + named.key + " has a negative size");
    const auto [known, inserted] = storages_.emplace(named.key, named);
    if (!inserted && (known->second.numel != named.numel || known->second.type != named.type)) {
      fail(path_, "storage " + named.key + " is named with two sizes or types");
    }
    PickleValue* value = make(PickleValue::Kind::kStorage);
    value->storage = std::move(named);
    return value;
  }

  PickleValue* reduce(const std::string& callable, const std::vector<PickleValue*>& args) {
    if (callable == "collections.OrderedDict") return make(PickleValue::Kind::kDict);  // a state dict, or a tensor's empty hooks
    if (callable == "torch._utils._rebuild_tensor_v2" || callable == "torch._utils._rebuild_tensor") {
      if (args.size() < 4 || args[0]->kind != PickleValue::Kind::kStorage) fail(path_, "malformed tensor in the pickle");
      PickleValue* value = make(PickleValue::Kind::kTensor);
      value->storage = args[0]->storage;
      value->offset = integer(args[1], "a tensor's storage offset");
      value->size = integers(args[2], "a tensor's size");
      value->stride = integers(args[3], "a tensor's stride");
      check_extent(*value);
      return value;
    }
    if (callable == "torch._utils._rebuild_parameter" || callable == "torch._utils._rebuild_parameter_with_state") {
      if (args.empty() || args[0]->kind != PickleValue::Kind::kTensor) fail(path_, "malformed parameter in the pickle");
      return args[0];
    }
    fail(path_, "the pickle calls " + callable + ", which a state dict of tensors does not need; it is not run");
  }

  // The view stays inside its storage; the arithmetic is checked, since the numbers are the file's.
  void check_extent(const PickleValue& tensor) {
    if (tensor.size.size() != tensor.stride.size()) fail(path_, "a tensor's size and stride differ in length");
    int64_t last = tensor.offset;
    bool empty = false;
    bool overflow = false;
    for (size_t i = 0; i < tensor.size.size(); ++i) {
      if (tensor.size[i] < 0 || tensor.stride[i] < 0) fail(path_, "a tensor has a negative size or stride");
      if (tensor.size[i] == 0) {
        empty = true;
        continue;
      }
      int64_t reach = 0;
      overflow = overflow || __builtin_mul_overflow(tensor.size[i] - 1, tensor.stride[i], &reach) ||
                 __builtin_add_overflow(last, reach, &last);
    }
    if (tensor.offset < 0 || (!empty && (overflow || last >= tensor.storage.numel))) {
      fail(path_, "a tensor reaches past the end of its storage");
    }
  }

  const std::string& data_;
  std::string path_;
  size_t position_ = 0;
  std::vector<std::unique_ptr<PickleValue>> arena_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::map<uint32_t, PickleValue*> memo_;
  std::map<std::string, PickledStorage> storages_;
};

}  // namespace

std::vector<PickledTensor> read_pickled_state_dict(const std::string& pickle, const std::string& path) {
  StateDictUnpickler unpickler(pickle, path);
  const PickleValue* root = unpickler.run();
  if (root->kind != PickleValue::Kind::kDict) fail(path, "the pickle is not a dict of tensors");
  std::vector<PickledTensor> tensors;
  tensors.reserve(root->entries.size());
  for (const auto& [key, value] : root->entries) {
    if (key->kind != PickleValue::Kind::kString || value->kind != PickleValue::Kind::kTensor) {
      fail(path, "the pickle is not a dict of names to tensors");
    }
    tensors.push_back({key->text, value->storage, value->offset, value->size, value->stride});
  }
  return tensors;
}

}  // namespace n3rlhf
