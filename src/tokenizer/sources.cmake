# The sources of n3rlhf_tokenizer (no libtorch), shared with tests/fuzz.
set(N3RLHF_TOKENIZER_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_added_tokens.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bert.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bert_tables.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_bpe.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_byte_level.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_decoders.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_normalizers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_postprocessors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_pretokenizers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_regex.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_unicode.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_unicode_normalization.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_unicode_tables.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_wordpiece.cpp
)
