// tokenizer_unicode_normalization.cpp: decomposition (with Hangul), canonical ordering and
// canonical composition over the generated tables.
#include "tokenizer/tokenizer_unicode_normalization.hpp"

#include <algorithm>
#include <vector>

#include "tokenizer/tokenizer_unicode.hpp"

namespace n3rlhf::tokenizer_detail {

namespace {

using namespace unicode_tables;

constexpr uint32_t kHangulBase = 0xAC00, kLeadBase = 0x1100, kVowelBase = 0x1161, kTrailBase = 0x11A7;
constexpr uint32_t kLeadCount = 19, kVowelCount = 21, kTrailCount = 28;
constexpr uint32_t kSyllableCount = kLeadCount * kVowelCount * kTrailCount;

uint8_t combining_class(uint32_t code_point) {
  if (code_point < 0x300) return 0;
  const auto* end = kCombiningClasses + kCombiningClassCount;
  const auto* it = std::lower_bound(kCombiningClasses, end, code_point,
                                    [](const CombiningClassEntry& entry, uint32_t value) { return entry.code_point < value; });
  return it != end && it->code_point == code_point ? it->combining_class : 0;
}

void decompose(uint32_t code_point, bool compatibility, std::vector<uint32_t>& out) {
  if (code_point >= kHangulBase && code_point < kHangulBase + kSyllableCount) {
    const uint32_t index = code_point - kHangulBase;
    out.push_back(kLeadBase + index / (kVowelCount * kTrailCount));
    out.push_back(kVowelBase + (index % (kVowelCount * kTrailCount)) / kTrailCount);
    if (index % kTrailCount != 0) out.push_back(kTrailBase + index % kTrailCount);
    return;
  }
  const DecompositionEntry* table = compatibility ? kCompatibility : kCanonical;
  const uint32_t* data = compatibility ? kCompatibilityData : kCanonicalData;
  const DecompositionEntry* end = table + (compatibility ? kCompatibilityCount : kCanonicalCount);
  const auto* it = std::lower_bound(table, end, code_point,
                                    [](const DecompositionEntry& entry, uint32_t value) { return entry.code_point < value; });
  if (it == end || it->code_point != code_point) {
    out.push_back(code_point);
    return;
  }
  for (uint32_t i = 0; i < it->length; ++i) decompose(data[it->offset + i], compatibility, out);
}

uint32_t compose_pair(uint32_t first, uint32_t second) {
  if (first >= kLeadBase && first < kLeadBase + kLeadCount && second >= kVowelBase && second < kVowelBase + kVowelCount)
    return kHangulBase + ((first - kLeadBase) * kVowelCount + (second - kVowelBase)) * kTrailCount;
  if (first >= kHangulBase && first < kHangulBase + kSyllableCount && (first - kHangulBase) % kTrailCount == 0 &&
      second > kTrailBase && second < kTrailBase + kTrailCount)
    return first + (second - kTrailBase);
  const auto* end = kCompositions + kCompositionCount;
  const auto* it = std::lower_bound(kCompositions, end, std::make_pair(first, second),
                                    [](const CompositionEntry& entry, const std::pair<uint32_t, uint32_t>& value) {
                                      return entry.first != value.first ? entry.first < value.first : entry.second < value.second;
                                    });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

}  // namespace

std::string unicode_normalize(std::string_view text, UnicodeForm form) {
  // Quick checks: ASCII is invariant under every form, and nothing below U+0300 changes under NFC.
  const bool composing = form == UnicodeForm::kNFC || form == UnicodeForm::kNFKC;
  const bool compatibility = form == UnicodeForm::kNFKC || form == UnicodeForm::kNFKD;
  bool unchanged = true;
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x80 && !(form == UnicodeForm::kNFC && byte < 0xCC)) {
      unchanged = false;
      break;
    }
  }
  if (unchanged) return std::string(text);

  std::vector<uint32_t> code_points;
  code_points.reserve(text.size());
  for (size_t position = 0; position < text.size();) {
    decompose(decode_code_point(text, position), compatibility, code_points);
    position += utf8_sequence_length(static_cast<unsigned char>(text[position]));
  }
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < code_points.size();) {
    if (combining_class(code_points[i]) == 0) {
      ++i;
      continue;
    }
    size_t run_end = i;
    while (run_end < code_points.size() && combining_class(code_points[run_end]) != 0) ++run_end;
    std::stable_sort(code_points.begin() + i, code_points.begin() + run_end,
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = run_end;
  }
  if (composing) {
    std::vector<uint32_t> composed;
    composed.reserve(code_points.size());
    size_t starter = SIZE_MAX;
    uint8_t last_class = 0;
    for (const uint32_t code_point : code_points) {
      const uint8_t current_class = combining_class(code_point);
      if (starter != SIZE_MAX) {
        const bool adjacent = composed.size() == starter + 1;
        if (adjacent || (last_class != 0 && last_class < current_class)) {
          const uint32_t composite = compose_pair(composed[starter], code_point);
          if (composite != 0) {
            composed[starter] = composite;
            continue;
          }
        }
      }
      if (current_class == 0) starter = composed.size();
      last_class = current_class;
      composed.push_back(code_point);
    }
    code_points.swap(composed);
  }
  std::string out;
  out.reserve(text.size());
  for (const uint32_t code_point : code_points) append_utf8(out, code_point);
  return out;
}

}  // namespace n3rlhf::tokenizer_detail
