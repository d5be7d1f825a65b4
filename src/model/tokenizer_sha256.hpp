// tokenizer_sha256.hpp: SHA-256 (FIPS 180-4) of a byte string as lowercase hex, for the
// tokenizer's content hash in data manifests.
#pragma once

#include <string>
#include <string_view>

namespace n3rlhf::tokenizer_detail {

std::string sha256_hex(std::string_view bytes);

}  // namespace n3rlhf::tokenizer_detail
