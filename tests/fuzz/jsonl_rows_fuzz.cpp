// jsonl_rows_fuzz.cpp: libFuzzer target for data rows: the input is cut into JSONL lines, and
// each is parsed in every data layout (preference, unpaired/KTO, SFT, prompts), conversational
// fields rendered by each chat template. The only acceptable failures are DatasetError and the
// typed RLHF errors of the templates.
#include <cstdint>
#include <string>

#include "core/config.hpp"
#include "core/error.hpp"
#include "io/chat_template.hpp"
#include "io/jsonl_reader.hpp"
#include "io/jsonl_rows.hpp"

namespace {

void render(const n3rlhf::RowContent& content) {
  if (!content.conversational) return;
  for (const std::string& name : n3rlhf::ChatTemplate::names()) {
    const n3rlhf::ChatTemplate chat = n3rlhf::ChatTemplate::by_name(name, "<s>");
    (void)chat.render(content.messages, true);
    (void)chat.render(content.messages, false);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  n3rlhf::DataConfig columns;
  for (n3rlhf::DatasetKind kind : {n3rlhf::DatasetKind::kPreference, n3rlhf::DatasetKind::kUnpaired,
                                   n3rlhf::DatasetKind::kSft, n3rlhf::DatasetKind::kPrompts}) {
    const n3rlhf::JsonlRowParser parser(kind, columns, "fuzz.jsonl");
    n3rlhf::JsonlFile::LineCursor cursor(bytes, "fuzz.jsonl", 1 << 16);
    n3rlhf::JsonlLine line;
    try {
      while (cursor.next(&line)) {
        try {
          const n3rlhf::DataRow row = parser.parse(line);
          for (const n3rlhf::RowContent* content : {&row.prompt, &row.chosen, &row.rejected, &row.completion, &row.text}) {
            render(*content);
          }
        } catch (const n3rlhf::RlhfError&) {
          // Expected: RLHF021/022/025 naming the line.
        }
      }
    } catch (const n3rlhf::DatasetError&) {
      // A line over the bound.
    }
  }
  return 0;
}
