// dsl_parser_test.cpp: the N3 job-file parser on valid files and on every syntax error path,
// with the reported line and column checked.
#include <gtest/gtest.h>

#include "core/dsl_parser.hpp"

namespace n3rlhf {
namespace {

DslDocument parse(const std::string& text) {
  return parse_job_text(std::make_shared<const SourceFile>("job.n3", text));
}

// The first diagnostic of a syntax error.
Diagnostic syntax_error(const std::string& text) {
  try {
    parse(text);
  } catch (const JobFileError& error) {
    EXPECT_EQ(error.diagnostics().size(), 1u);
    return error.diagnostics().front();
  }
  ADD_FAILURE() << "no error for:\n" << text;
  return {};
}

const char* kIssueExample = R"(train rlhf "HelpfulAssistant" {
    base_model: "models/llama-tiny"
    algorithm: "dpo"
    dataset: "data/helpfulness.jsonl"
    peft: { method: "qlora"  r: 64  alpha: 16  quantization_bits: 4 }
    hyperparameters: { learning_rate: 1e-5  batch_size: 64  max_steps: 20000  beta: 0.1 }
    logging: { tracker: "tensorboard"  project: "n3-rlhf"  run_name: "helpful-v1" }
    safety: { enable_safety_filter: true  toxicity_threshold: 0.7 }
    output: { model_registry: "runs/helpful"  push_to_hub: false }
}
)";

TEST(DslParser, ParsesTheIssueExample) {
  const DslDocument document = parse(kIssueExample);
  ASSERT_EQ(document.jobs.size(), 1u);
  const DslJob& job = document.jobs[0];
  EXPECT_EQ(job.name, "HelpfulAssistant");
  EXPECT_EQ(job.location.line, 1);
  ASSERT_EQ(job.body.entries.size(), 8u);
  const DslEntry* peft = job.body.find("peft");
  ASSERT_NE(peft, nullptr);
  ASSERT_EQ(peft->value.kind, DslValue::Kind::kBlock);
  ASSERT_EQ(peft->value.entries.size(), 4u);
  EXPECT_EQ(peft->value.find("r")->value.integer, 64);
  EXPECT_EQ(peft->value.find("method")->value.text, "qlora");
  const DslValue& lr = job.body.find("hyperparameters")->value.find("learning_rate")->value;
  EXPECT_EQ(lr.kind, DslValue::Kind::kFloat);
  EXPECT_DOUBLE_EQ(lr.number, 1e-5);
  EXPECT_EQ(lr.location.line, 6);
  EXPECT_EQ(lr.location.column, 39);
  const DslValue& enabled = job.body.find("safety")->value.find("enable_safety_filter")->value;
  EXPECT_EQ(enabled.kind, DslValue::Kind::kBool);
  EXPECT_TRUE(enabled.boolean);
  EXPECT_TRUE(document.warnings.empty());
}

TEST(DslParser, CommasNewlinesCommentsListsAndSeveralJobs) {
  const DslDocument document = parse(R"(# two jobs
train rlhf "A" { base_model: "m", dataset: "d",  # trailing comment
  tags: ["x", "y",
         'z'] // slash comment
  nested: { deeper: { value: -3 } }
}
train rlhf 'B' {
  empty_list: []
  escaped: "a\"b\\c\n\u00e9"
  negative: -1.5E-3
  big: 1_000
}
)");
  ASSERT_EQ(document.jobs.size(), 2u);
  EXPECT_EQ(document.jobs[1].name, "B");
  const DslValue& a = document.jobs[0].body;
  EXPECT_EQ(a.find("dataset")->value.text, "d");
  const DslValue& tags = a.find("tags")->value;
  ASSERT_EQ(tags.items.size(), 3u);
  EXPECT_EQ(tags.items[2].text, "z");
  EXPECT_EQ(tags.items[2].location.line, 4);
  EXPECT_EQ(a.find("nested")->value.find("deeper")->value.find("value")->value.integer, -3);
  const DslValue& b = document.jobs[1].body;
  EXPECT_TRUE(b.find("empty_list")->value.items.empty());
  EXPECT_EQ(b.find("escaped")->value.text, "a\"b\\c\n\xc3\xa9");
  EXPECT_DOUBLE_EQ(b.find("negative")->value.number, -1.5e-3);
  EXPECT_EQ(b.find("big")->value.integer, 1000);
}

TEST(DslParser, LeadingDotNumberIsAnErrorWithPosition) {
  const Diagnostic d = syntax_error("train rlhf \"A\" {\n  ratio: .5\n}\n");
  EXPECT_EQ(d.location.line, 2);
  EXPECT_EQ(d.location.column, 10);
  EXPECT_NE(d.message.find("digit before '.'"), std::string::npos);
}

TEST(DslParser, CallExpressionsBecomeAst) {
  const DslDocument document = parse(
      "train rlhf \"C\" {\n  dataset: feedback.export(\"customer_support\", min_samples: 100,\n"
      "     since: \"2025-01-01\")\n  model: models.base\n}\n");
  const DslValue& call = document.jobs[0].body.find("dataset")->value;
  ASSERT_EQ(call.kind, DslValue::Kind::kCall);
  EXPECT_EQ(call.text, "feedback.export");
  ASSERT_EQ(call.items.size(), 1u);
  EXPECT_EQ(call.items[0].text, "customer_support");
  ASSERT_EQ(call.entries.size(), 2u);
  EXPECT_EQ(call.entries[0].key, "min_samples");
  EXPECT_EQ(call.entries[0].value.integer, 100);
  EXPECT_EQ(call.entries[1].value.text, "2025-01-01");
  EXPECT_EQ(call.location.column, 12);
  EXPECT_EQ(call.location.length, 15);
  const DslValue& reference = document.jobs[0].body.find("model")->value;
  EXPECT_EQ(reference.kind, DslValue::Kind::kReference);
  EXPECT_EQ(reference.text, "models.base");
  EXPECT_EQ(dsl_value_to_json(call).dump(),
            R"({"args":["customer_support"],"call":"feedback.export","kwargs":{"min_samples":100,"since":"2025-01-01"}})");
}

TEST(DslParser, OtherTopLevelBlocksAreSkippedWithWarnings) {
  const DslDocument document = parse(R"(app "Support".
agent customer_support {
    llm: helpful_assistant_trained
    tools: [search_docs, create_ticket]
    goal: "Provide {helpful} support"
}
chain support_with_feedback {
    steps: [
        prompt.support_prompt(query: input.query) | model.gpt4,
        feedback.collect(prompt: input.query, response: previous.output)
    ]
}
prompt p { template: """multi
line { with braces
""" }
train rlhf "Real" { base_model: "m" }
train model "NotRlhf" { x: 1 }
)");
  ASSERT_EQ(document.jobs.size(), 1u);
  EXPECT_EQ(document.jobs[0].name, "Real");
  ASSERT_EQ(document.warnings.size(), 5u);
  EXPECT_EQ(document.warnings[1].location.line, 2);
  EXPECT_NE(document.warnings[1].message.find("'agent'"), std::string::npos);
  EXPECT_EQ(document.warnings[3].location.line, 13);
  EXPECT_EQ(document.warnings[4].location.line, 17);
  EXPECT_EQ(document.warnings[4].severity, Severity::kWarning);
}

struct ErrorCase {
  const char* name;
  const char* text;
  int line;
  int column;
  const char* message_part;
};

class DslParserErrors : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(DslParserErrors, PointsAtTheOffendingToken) {
  const ErrorCase& c = GetParam();
  const Diagnostic d = syntax_error(c.text);
  EXPECT_EQ(d.code, ErrorCode::kMissingField);
  EXPECT_EQ(d.location.line, c.line) << d.message;
  EXPECT_EQ(d.location.column, c.column) << d.message;
  EXPECT_NE(d.message.find(c.message_part), std::string::npos) << d.message;
  EXPECT_EQ(d.location.file->name(), "job.n3");
}

INSTANTIATE_TEST_SUITE_P(
    AllPaths, DslParserErrors,
    ::testing::Values(
        ErrorCase{"unterminated_string", "train rlhf \"A\" {\n  base_model: \"abc\n}\n", 2, 15, "unterminated string"},
        ErrorCase{"missing_colon", "train rlhf \"A\" {\n  base_model \"m\"\n}\n", 2, 14, "expected ':'"},
        ErrorCase{"unclosed_block", "train rlhf \"A\" {\n  base_model: \"m\"\n", 1, 16, "never closed"},
        ErrorCase{"unclosed_nested", "train rlhf \"A\" {\n  peft: { r: 4\n", 2, 9, "never closed"},
        ErrorCase{"unclosed_list", "train rlhf \"A\" {\n  tags: [\"a\"\n", 2, 9, "never closed"},
        ErrorCase{"duplicate_key", "train rlhf \"A\" {\n  r: 1\n  r: 2\n}\n", 3, 3, "duplicate key 'r'"},
        ErrorCase{"bad_number", "train rlhf \"A\" {\n  r: 12abc\n}\n", 2, 6, "malformed number"},
        ErrorCase{"bad_exponent", "train rlhf \"A\" {\n  lr: 1e-\n}\n", 2, 7, "malformed exponent"},
        ErrorCase{"integer_overflow", "train rlhf \"A\" {\n  r: 99999999999999999999\n}\n", 2, 6, "out of range"},
        ErrorCase{"bad_escape", "train rlhf \"A\" {\n  s: \"a\\qb\"\n}\n", 2, 8, "unknown escape"},
        ErrorCase{"bad_unicode_escape", "train rlhf \"A\" {\n  s: \"\\u12\"\n}\n", 2, 7, "four hex digits"},
        ErrorCase{"unquoted_job_name", "train rlhf Name {\n}\n", 1, 12, "quoted string"},
        ErrorCase{"missing_job_block", "train rlhf \"A\"\n base_model: 1\n", 2, 2, "expected '{'"},
        ErrorCase{"missing_value", "train rlhf \"A\" {\n  r:\n}\n", 3, 1, "expected a value"},
        ErrorCase{"stray_character", "train rlhf \"A\" {\n  r: @\n}\n", 2, 6, "expected a value"},
        ErrorCase{"key_not_name", "train rlhf \"A\" {\n  12: 3\n}\n", 2, 3, "expected a key"},
        ErrorCase{"positional_after_named", "train rlhf \"A\" {\n  d: f(a: 1, 2)\n}\n", 2, 14, "positional argument"},
        ErrorCase{"missing_comma_in_call", "train rlhf \"A\" {\n  d: f(1 2)\n}\n", 2, 10, "expected ','"},
        ErrorCase{"duplicate_argument", "train rlhf \"A\" {\n  d: f(a: 1, a: 2)\n}\n", 2, 14, "given twice"},
        ErrorCase{"unclosed_call", "train rlhf \"A\" {\n  d: f(1,\n", 2, 7, "never closed"},
        ErrorCase{"top_level_garbage", "\"loose string\"\n", 1, 1, "top-level block"},
        ErrorCase{"unmatched_close_top", "agent x }\n", 1, 9, "unmatched"},
        ErrorCase{"unclosed_skipped_block", "agent x {\n  y: 1\n", 1, 9, "never closed"},
        ErrorCase{"empty_job_name", "train rlhf \"\" {}\n", 1, 15, "empty"},
        ErrorCase{"dot_without_name", "train rlhf \"A\" {\n  d: feedback.\n}\n", 2, 15, "a name after '.'"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return std::string(info.param.name); });

TEST(DslParser, DeepNestingIsAnErrorNotAStackOverflow) {
  const Diagnostic d = syntax_error("train rlhf \"A\" {\n  x: " + std::string(100000, '[') + "\n}\n");
  EXPECT_NE(d.message.find("nested more than 64 levels"), std::string::npos) << d.message;
  EXPECT_EQ(d.location.line, 2);
  EXPECT_EQ(d.location.column, 6 + 64);
}

TEST(DslParser, DiagnosticRendersLineCaretAndHint) {
  Diagnostic d = syntax_error("train rlhf \"A\" {\n  base_model \"m\"\n}\n");
  d.hint = "write base_model: value";
  const std::string text = format_diagnostic(d);
  EXPECT_EQ(text,
            "job.n3:2:14: error[RLHF001]: expected ':' after key 'base_model', found string \"m\"\n"
            " 2 |   base_model \"m\"\n"
            "   |              ^~~\n"
            "  = hint: write base_model: value\n");
}

TEST(DslParser, SingleValueParsingForOverrides) {
  DslValue value;
  ASSERT_TRUE(parse_dsl_value_text("[\"q_proj\", \"v_proj\"]", "--set x", &value));
  EXPECT_EQ(value.kind, DslValue::Kind::kList);
  EXPECT_EQ(value.items.size(), 2u);
  EXPECT_EQ(value.location.origin, "--set x");
  ASSERT_TRUE(parse_dsl_value_text("5e-6", "--set x", &value));
  EXPECT_DOUBLE_EQ(value.number, 5e-6);
  EXPECT_FALSE(parse_dsl_value_text("1 2", "--set x", &value));
  EXPECT_FALSE(parse_dsl_value_text("{", "--set x", &value));
}

TEST(DslParser, MissingFileIsAConfigurationError) {
  try {
    parse_job_file("/nonexistent/job.n3");
    FAIL();
  } catch (const ConfigurationError& error) {
    EXPECT_EQ(error.code(), ErrorCode::kMissingField);
    EXPECT_NE(std::string(error.what()).find("/nonexistent/job.n3"), std::string::npos);
  }
}

}  // namespace
}  // namespace n3rlhf
