// tokenizer_json_fuzz.cpp: libFuzzer target for tokenizer.json: arbitrary bytes build a tokenizer
// (normalizers, pre-tokenizers, BPE model, post-processor, decoder, added tokens); a rejected
// file must be ModelError, and an accepted one must encode and decode text without crashing.
#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const n3rlhf::Tokenizer tokenizer = n3rlhf::Tokenizer::from_json_text(text);
    for (const char* sample : {"Hello world! 12 345", " caf\xC3\xA9 \xE2\x80\x94 <|endoftext|>\n\ttabs", ""}) {
      const std::vector<int32_t> ids = tokenizer.encode(sample, true);
      (void)tokenizer.decode(ids, false);
    }
  } catch (const n3rlhf::RlhfError&) {
    // Expected for malformed input.
  }
  return 0;
}
