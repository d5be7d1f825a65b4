// tokenizer_bpe.hpp: the BPE model of tokenizer.json: vocabulary and merge ranks in flat hash
// tables, merges applied lowest rank first (leftmost on ties) exactly as the tokenizers library
// does, unk/byte_fallback/fuse_unk, continuing_subword_prefix / end_of_word_suffix, ignore_merges,
// and a bounded per-word cache.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace n3rlhf::tokenizer_detail {

// Open-addressing map from byte strings to ids; keys live in one buffer.
class StringIdMap {
 public:
  void reserve(size_t count);
  void insert_or_assign(std::string_view key, int32_t id);
  int32_t find(std::string_view key) const;  // -1 when absent
  size_t size() const { return count_; }

 private:
  struct Slot {
    uint64_t hash = 0;  // 0 marks an empty slot
    uint32_t offset = 0, length = 0;
    int32_t id = -1;
  };
  void grow();
  std::vector<Slot> slots_;
  std::string keys_;
  size_t count_ = 0;
};

// Word -> ids, bounded: when full it is emptied and refilled (no eviction bookkeeping per hit).
class BpeCache {
 public:
  static constexpr size_t kMaxWordBytes = 256;
  explicit BpeCache(size_t capacity = 1 << 16);
  // Appends the cached ids of `word` to `ids`; false when `word` is not cached.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& ids) const;
  void insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t count);

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0, key_length = 0, ids_offset = 0, ids_length = 0;
  };
  void clear();
  size_t capacity_;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t count_ = 0;
};

// Reused buffers of one encode call.
struct BpeScratch {
  std::vector<int32_t> symbols;
  std::vector<uint32_t> ranks;
  std::vector<int32_t> merged_ids;
  std::string text;
};

// The model stage of tokenizer.json: one pre-tokenized word in, its ids out (BPE, WordPiece).
class TokenModel {
 public:
  virtual ~TokenModel() = default;
  // Appends the ids of one pre-tokenized word; `cache` (word -> ids) may be null.
  virtual void tokenize(std::string_view word, BpeCache* cache, BpeScratch& scratch, std::vector<int32_t>& ids) const = 0;
  virtual int32_t token_to_id(std::string_view token) const = 0;  // -1 when absent
  virtual const std::string* id_to_token(int32_t id) const = 0;   // nullptr when absent
  virtual size_t vocab_size() const = 0;
};

class BpeModel final : public TokenModel {
 public:
  // `raw_byte_input`: words arrive as raw bytes and the model applies the byte-level alphabet
  // itself (the final ByteLevel pre-tokenizer step was deferred to it).
  static std::unique_ptr<BpeModel> from_json(const nlohmann::json& model, bool raw_byte_input);

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, BpeCache* cache, BpeScratch& scratch, std::vector<int32_t>& ids) const override;

  int32_t token_to_id(std::string_view token) const override { return vocab_.find(token); }
  const std::string* id_to_token(int32_t id) const override;
  size_t vocab_size() const override { return vocab_.size(); }
  // Every (token, id) of the vocabulary, for the tokenizer's added-token bookkeeping.

 private:
  struct MergeEntry {
    uint64_t key = ~0ULL;  // (left << 32) | right; all ones marks an empty slot
    uint32_t rank = 0;
    int32_t new_id = -1;
  };
  const MergeEntry* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, uint32_t rank, int32_t new_id);
  // The symbols a word starts from, char by char (tokenizers' merge_word before merging).
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void apply_merges(BpeScratch& scratch) const;
  void apply_merges_with_heap(std::vector<int32_t>& symbols) const;

  StringIdMap vocab_;
  StringIdMap raw_vocab_;  // raw-byte spelling of byte-level tokens (raw_byte_input + ignore_merges)
  std::vector<std::string> tokens_by_id_;
  std::vector<bool> id_present_;
  std::vector<MergeEntry> merges_;
  uint64_t merge_mask_ = 0;
  int32_t byte_ids_[256];  // id of each byte's byte-level character, -1 when absent
  bool raw_byte_input_ = false;
  bool raw_fast_path_ = false;  // every byte has an id and no prefix/suffix applies
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  int32_t byte_fallback_ids_[256];  // id of "<0xAB>" for each byte, -1 when absent
};

}  // namespace n3rlhf::tokenizer_detail
