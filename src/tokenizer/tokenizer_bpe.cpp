// tokenizer_bpe.cpp: the BPE model: loading vocab and merges (both JSON spellings), the initial
// symbols of a word (unk, byte fallback, subword prefix/suffix), and merging by rank.
#include "tokenizer/tokenizer_bpe.hpp"

#include <algorithm>
#include <cstring>
#include <queue>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "tokenizer/tokenizer_byte_level.hpp"
#include "tokenizer/tokenizer_components.hpp"
#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

const std::string kComponent = "model";
constexpr uint32_t kNoMerge = UINT32_MAX;
// Words up to this many symbols merge with a linear scan over a rank array; longer ones (whole
// sentences when there is no pre-tokenizer) use a heap so the cost stays n log n.
constexpr size_t kLinearMergeLimit = 48;

uint64_t mix_pair(uint64_t key) {
  key ^= key >> 33;
  key *= 0xFF51AFD7ED558CCDULL;
  key ^= key >> 33;
  return key;
}

}  // namespace

// ---- StringIdMap ----

void StringIdMap::reserve(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2) capacity *= 2;
  if (capacity <= slots_.size()) return;
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(capacity, Slot{});
  const size_t mask = capacity - 1;
  for (const Slot& slot : old) {
    if (slot.hash == 0) continue;
    size_t index = slot.hash & mask;
    while (slots_[index].hash != 0) index = (index + 1) & mask;
    slots_[index] = slot;
  }
}

void StringIdMap::grow() { reserve(std::max<size_t>(16, count_ + 1) * 2); }

void StringIdMap::insert_or_assign(std::string_view key, int32_t id) {
  if ((count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t hash = hash_bytes(key) | 1;
  const size_t mask = slots_.size() - 1;
  size_t index = hash & mask;
  while (slots_[index].hash != 0) {
    Slot& slot = slots_[index];
    if (slot.hash == hash && std::string_view(keys_.data() + slot.offset, slot.length) == key) {
      slot.id = id;
      return;
    }
    index = (index + 1) & mask;
  }
  slots_[index] = Slot{hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(key.size()), id};
  keys_.append(key);
  ++count_;
}

int32_t StringIdMap::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  const uint64_t hash = hash_bytes(key) | 1;
  const size_t mask = slots_.size() - 1;
  size_t index = hash & mask;
  while (slots_[index].hash != 0) {
    const Slot& slot = slots_[index];
    if (slot.hash == hash && slot.length == key.size() && std::memcmp(keys_.data() + slot.offset, key.data(), key.size()) == 0)
      return slot.id;
    index = (index + 1) & mask;
  }
  return -1;
}

// ---- BpeCache ----

BpeCache::BpeCache(size_t capacity) : capacity_(capacity) { clear(); }

void BpeCache::clear() {
  slots_.assign(capacity_ * 2, Slot{});
  keys_.clear();
  ids_.clear();
  count_ = 0;
}

bool BpeCache::lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& ids) const {
  hash |= 1;
  const size_t mask = slots_.size() - 1;
  size_t index = hash & mask;
  while (slots_[index].hash != 0) {
    const Slot& slot = slots_[index];
    if (slot.hash == hash && slot.key_length == word.size() &&
        std::memcmp(keys_.data() + slot.key_offset, word.data(), word.size()) == 0) {
      ids.insert(ids.end(), ids_.begin() + slot.ids_offset, ids_.begin() + slot.ids_offset + slot.ids_length);
      return true;
    }
    index = (index + 1) & mask;
  }
  return false;
}

void BpeCache::insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t count) {
  if (word.size() > kMaxWordBytes) return;
  if (count_ >= capacity_) clear();
  hash |= 1;
  const size_t mask = slots_.size() - 1;
  size_t index = hash & mask;
  while (slots_[index].hash != 0) index = (index + 1) & mask;
  slots_[index] = Slot{hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(word.size()),
                       static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(count)};
  keys_.append(word);
  ids_.insert(ids_.end(), ids, ids + count);
  ++count_;
}

// ---- BpeModel ----

std::unique_ptr<BpeModel> BpeModel::from_json(const nlohmann::json& model, bool raw_byte_input) {
  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  const auto optional_string = [&](const char* key) {
    return model.contains(key) && model[key].is_string() ? model[key].get<std::string>() : std::string();
  };
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0.0)
    throw_unsupported(kComponent, "BPE", "dropout > 0 makes encoding random; it is not supported");
  bpe->continuing_subword_prefix_ = optional_string("continuing_subword_prefix");
  bpe->end_of_word_suffix_ = optional_string("end_of_word_suffix");
  bpe->fuse_unk_ = model.value("fuse_unk", false);
  bpe->byte_fallback_ = model.value("byte_fallback", false);
  bpe->ignore_merges_ = model.value("ignore_merges", false);

  const auto& vocab = require_field(model, "vocab", kComponent);
  if (!vocab.is_object()) throw_unsupported(kComponent, "BPE", "vocab is not a JSON object");
  bpe->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      throw_unsupported(kComponent, "BPE", "vocab entry '" + it.key() + "' has no valid id");
    const int32_t id = it.value().get<int32_t>();
    bpe->vocab_.insert_or_assign(it.key(), id);
    if (static_cast<size_t>(id) >= bpe->tokens_by_id_.size()) {
      bpe->tokens_by_id_.resize(id + 1);
      bpe->id_present_.resize(id + 1, false);
    }
    bpe->tokens_by_id_[id] = it.key();
    bpe->id_present_[id] = true;
  }

  const std::string unk = optional_string("unk_token");
  if (!unk.empty()) {
    const int32_t id = bpe->vocab_.find(unk);
    if (id < 0) throw_unsupported(kComponent, "BPE", "unk_token '" + unk + "' is not in the vocabulary");
    bpe->unk_id_ = id;
  }

  const auto& merges = require_field(model, "merges", kComponent);
  size_t capacity = 16;
  while (capacity < merges.size() * 2 + 2) capacity *= 2;
  bpe->merges_.assign(capacity, MergeEntry{});
  bpe->merge_mask_ = capacity - 1;
  const size_t prefix_length = bpe->continuing_subword_prefix_.size();
  uint32_t rank = 0;
  for (const auto& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos) throw_unsupported(kComponent, "BPE", "merge '" + line + "' is not \"left right\"");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      throw_unsupported(kComponent, "BPE", "a merge is neither \"left right\" nor [\"left\", \"right\"]");
    }
    const int32_t left_id = bpe->vocab_.find(left), right_id = bpe->vocab_.find(right);
    if (left_id < 0 || right_id < 0 || right.size() < prefix_length)
      throw_unsupported(kComponent, "BPE", "merge '" + left + " " + right + "' names a token that is not in the vocabulary");
    const std::string merged = left + right.substr(prefix_length);
    const int32_t new_id = bpe->vocab_.find(merged);
    if (new_id < 0) throw_unsupported(kComponent, "BPE", "merge result '" + merged + "' is not in the vocabulary");
    bpe->insert_merge(left_id, right_id, rank++, new_id);
  }

  const ByteLevelAlphabet& alphabet = byte_level_alphabet();
  bool every_byte_has_id = true;
  for (int byte = 0; byte < 256; ++byte) {
    bpe->byte_ids_[byte] = bpe->vocab_.find(alphabet.byte_to_char[byte]);
    every_byte_has_id = every_byte_has_id && bpe->byte_ids_[byte] >= 0;
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    bpe->byte_fallback_ids_[byte] = bpe->vocab_.find(name);
  }
  bpe->raw_byte_input_ = raw_byte_input;
  bpe->raw_fast_path_ = raw_byte_input && every_byte_has_id && bpe->continuing_subword_prefix_.empty() &&
                        bpe->end_of_word_suffix_.empty();
  if (bpe->raw_fast_path_ && bpe->ignore_merges_) {
    // Whole-word lookups then need each token's raw-byte spelling.
    bpe->raw_vocab_.reserve(bpe->vocab_.size());
    for (size_t id = 0; id < bpe->tokens_by_id_.size(); ++id) {
      if (!bpe->id_present_[id]) continue;
      const std::string& token = bpe->tokens_by_id_[id];
      bool maps = true;
      std::string raw;
      for (size_t position = 0; position < token.size() && maps;) {
        const uint32_t code_point = decode_code_point(token, position);
        maps = code_point < alphabet.char_to_byte.size() && alphabet.char_to_byte[code_point] >= 0;
        if (maps) raw.push_back(static_cast<char>(alphabet.char_to_byte[code_point]));
        position += utf8_sequence_length(static_cast<unsigned char>(token[position]));
      }
      if (maps) bpe->raw_vocab_.insert_or_assign(raw, static_cast<int32_t>(id));
    }
  }
  return bpe;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_by_id_.size() || !id_present_[id]) return nullptr;
  return &tokens_by_id_[id];
}

void BpeModel::insert_merge(int32_t left, int32_t right, uint32_t rank, int32_t new_id) {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  size_t index = mix_pair(key) & merge_mask_;
  while (merges_[index].key != ~0ULL && merges_[index].key != key) index = (index + 1) & merge_mask_;
  // A repeated merge keeps the later rank, as the library's HashMap collection does.
  merges_[index] = MergeEntry{key, rank, new_id};
}

const BpeModel::MergeEntry* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  size_t index = mix_pair(key) & merge_mask_;
  while (true) {
    const MergeEntry& entry = merges_[index];
    if (entry.key == key) return &entry;
    if (entry.key == ~0ULL) return nullptr;
    index = (index + 1) & merge_mask_;
  }
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  // Mirrors tokenizers' BPE::merge_word, including where a pending unk is flushed.
  std::optional<int32_t> pending_unk;
  std::string piece;
  size_t position = 0;
  while (position < word.size()) {
    const size_t length = utf8_sequence_length(static_cast<unsigned char>(word[position]));
    const bool is_first = position == 0;
    const bool is_last = position + length >= word.size();
    piece.clear();
    if (!is_first) piece += continuing_subword_prefix_;
    piece.append(word.substr(position, length));
    if (is_last) piece += end_of_word_suffix_;
    position += length;

    const int32_t id = vocab_.find(piece);
    if (id >= 0) {
      if (pending_unk) {
        symbols.push_back(*pending_unk);
        pending_unk.reset();
      }
      symbols.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (const char byte : piece) all_bytes = all_bytes && byte_fallback_ids_[static_cast<unsigned char>(byte)] >= 0;
      if (all_bytes) {
        for (const char byte : piece) symbols.push_back(byte_fallback_ids_[static_cast<unsigned char>(byte)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) symbols.push_back(*pending_unk);
      pending_unk = unk_id_;
    }
    // Without an unk token an unknown character is dropped, as in the library.
  }
  if (pending_unk) symbols.push_back(*pending_unk);
}

void BpeModel::apply_merges(BpeScratch& scratch) const {
  std::vector<int32_t>& symbols = scratch.symbols;
  if (symbols.size() < 2) return;
  if (symbols.size() > kLinearMergeLimit) {
    apply_merges_with_heap(symbols);
    return;
  }
  std::vector<uint32_t>& ranks = scratch.ranks;
  std::vector<int32_t>& merged = scratch.merged_ids;
  const auto evaluate = [&](size_t i) {
    const MergeEntry* entry = find_merge(symbols[i], symbols[i + 1]);
    ranks[i] = entry ? entry->rank : kNoMerge;
    merged[i] = entry ? entry->new_id : -1;
  };
  const size_t pairs = symbols.size() - 1;
  ranks.resize(pairs);
  merged.resize(pairs);
  for (size_t i = 0; i < pairs; ++i) evaluate(i);
  while (!ranks.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < ranks.size(); ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == kNoMerge) break;
    symbols[best] = merged[best];
    symbols.erase(symbols.begin() + best + 1);
    ranks.erase(ranks.begin() + best);
    merged.erase(merged.begin() + best);
    if (best < ranks.size()) evaluate(best);
    if (best > 0) evaluate(best - 1);
  }
}

void BpeModel::apply_merges_with_heap(std::vector<int32_t>& symbols) const {
  // tokenizers' Word::merge_all: a heap of (rank, position) over a linked list of symbols; stale
  // entries are recognised when the pair at their position no longer yields their token.
  struct Candidate {
    uint32_t rank;
    uint32_t position;
    int32_t new_id;
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  const size_t count = symbols.size();
  std::vector<int32_t> previous(count), next(count);
  std::vector<bool> removed(count, false);
  for (size_t i = 0; i < count; ++i) {
    previous[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < count ? static_cast<int32_t>(i + 1) : -1;
  }
  std::priority_queue<Candidate> queue;
  for (size_t i = 0; i + 1 < count; ++i) {
    if (const MergeEntry* entry = find_merge(symbols[i], symbols[i + 1]))
      queue.push({entry->rank, static_cast<uint32_t>(i), entry->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const size_t position = top.position;
    if (removed[position] || next[position] < 0) continue;
    const size_t right = static_cast<size_t>(next[position]);
    const MergeEntry* current = find_merge(symbols[position], symbols[right]);
    if (current == nullptr || current->new_id != top.new_id) continue;
    symbols[position] = top.new_id;
    removed[right] = true;
    next[position] = next[right];
    if (next[right] >= 0) previous[next[right]] = static_cast<int32_t>(position);
    if (previous[position] >= 0) {
      const size_t left = static_cast<size_t>(previous[position]);
      if (const MergeEntry* entry = find_merge(symbols[left], symbols[position]))
        queue.push({entry->rank, static_cast<uint32_t>(left), entry->new_id});
    }
    if (next[position] >= 0) {
      if (const MergeEntry* entry = find_merge(symbols[position], symbols[next[position]]))
        queue.push({entry->rank, static_cast<uint32_t>(position), entry->new_id});
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!removed[i]) symbols[kept++] = symbols[i];
  }
  symbols.resize(kept);
}

void BpeModel::tokenize(std::string_view word, BpeCache* cache, BpeScratch& scratch, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (raw_byte_input_ && !raw_fast_path_) {
    // Rare: some byte has no token of its own, or a prefix/suffix applies; spell the word in
    // the byte-level alphabet and take the general path.
    std::string mapped;
    append_byte_level(mapped, word);
    BpeScratch inner;
    std::vector<int32_t>& symbols = inner.symbols;
    if (ignore_merges_) {
      const int32_t id = vocab_.find(mapped);
      if (id >= 0) {
        ids.push_back(id);
        return;
      }
    }
    initial_symbols(mapped, symbols);
    apply_merges(inner);
    ids.insert(ids.end(), symbols.begin(), symbols.end());
    return;
  }
  if (ignore_merges_) {
    const int32_t id = raw_fast_path_ ? raw_vocab_.find(word) : vocab_.find(word);
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  const bool cacheable = cache != nullptr && word.size() <= BpeCache::kMaxWordBytes;
  const uint64_t hash = cacheable ? hash_bytes(word) : 0;
  if (cacheable && cache->lookup(word, hash, ids)) return;
  std::vector<int32_t>& symbols = scratch.symbols;
  symbols.clear();
  if (raw_fast_path_) {
    for (const char byte : word) symbols.push_back(byte_ids_[static_cast<unsigned char>(byte)]);
  } else {
    initial_symbols(word, symbols);
  }
  apply_merges(scratch);
  if (cacheable) cache->insert(word, hash, symbols.data(), symbols.size());
  ids.insert(ids.end(), symbols.begin(), symbols.end());
}

}  // namespace n3rlhf::tokenizer_detail
