// store_test.cpp: the FeedbackStore/JobStore contract on both backends (SQLite file, real
// PostgreSQL server): migrations, inserts and time-window queries, hostile text stored verbatim,
// job rows, JSONL and Parquet exports read back by pandas/pyarrow, and feedback.export(...)
// resolved in a job file (RLHF023 with the count below min_samples).
#include <gtest/gtest.h>

#include <atomic>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "core/config_builder.hpp"
#include "core/data_source_resolver.hpp"
#include "core/diagnostic.hpp"
#include "core/dsl_parser.hpp"
#include "core/error.hpp"
#include "service/feedback_export.hpp"
#include "service/feedback_input.hpp"
#include "service/feedback_source.hpp"
#include "service/migrations.hpp"
#include "service/service_test_support.hpp"
#include "service/store.hpp"

namespace n3rlhf::service {
namespace {

using testing::Backend;

FeedbackRecord row(const std::string& agent, int i, const std::string& created_at = "") {
  FeedbackRecord r;
  r.agent_id = agent;
  r.prompt = "prompt " + std::to_string(i);
  r.response_chosen = "good " + std::to_string(i);
  r.response_rejected = "bad " + std::to_string(i);
  r.score = i * 0.5;
  r.annotator_id = "ann";
  r.metadata = R"({"i":)" + std::to_string(i) + "}";
  r.created_at = created_at;
  return r;
}

class StoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  std::unique_ptr<Store> open(const std::string& name = "store") {
    if (url_.empty()) url_ = testing::fresh_store_url(GetParam(), dir_, name);
    StoreOptions options;
    options.url = url_;
    return open_store(options);
  }
  testing::TempDir dir_;
  std::string url_;
};

TEST_P(StoreTest, MigratesOnceAndReopens) {
  auto store = open();
  EXPECT_EQ(store->backend(), testing::backend_name(GetParam()));
  EXPECT_EQ(store->schema_version(), migrations().back().version);
  EXPECT_TRUE(store->healthy());
  store->insert_feedback({row("a", 1)});
  store.reset();
  auto again = open();  // applying migrations again must neither fail nor lose rows
  EXPECT_EQ(again->schema_version(), migrations().back().version);
  EXPECT_EQ(again->count_feedback({"a", "", "", 0}), 1);
}

TEST_P(StoreTest, InsertsScansAndCountsByAgentAndWindow) {
  auto store = open();
  const auto ids = store->insert_feedback({row("a", 1, "2025-01-01T00:00:00.000000Z"),
                                           row("a", 2, "2025-01-02T00:00:00.000000Z"),
                                           row("b", 3, "2025-01-02T12:00:00.000000Z"),
                                           row("a", 4, "2025-01-03T00:00:00.000000Z")});
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_LT(ids[0], ids[1]);
  EXPECT_EQ(store->count_feedback({"a", "", "", 0}), 3);
  EXPECT_EQ(store->count_feedback({"b", "", "", 0}), 1);
  EXPECT_EQ(store->count_feedback({"a", "2025-01-02T00:00:00.000000Z", "", 0}), 2);
  EXPECT_EQ(store->count_feedback({"a", "", "2025-01-02T00:00:00.000000Z", 0}), 1);  // until is exclusive
  EXPECT_EQ(store->count_feedback({"a", "", "", 2}), 2);
  std::vector<FeedbackRecord> seen;
  store->scan_feedback({"a", "2025-01-02T00:00:00.000000Z", "", 0}, [&](const FeedbackRecord& r) { seen.push_back(r); });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].prompt, "prompt 2");
  EXPECT_EQ(seen[1].prompt, "prompt 4");
  EXPECT_EQ(seen[0].created_at, "2025-01-02T00:00:00.000000Z");
  ASSERT_TRUE(seen[0].score.has_value());
  EXPECT_DOUBLE_EQ(*seen[0].score, 1.0);
  EXPECT_EQ(nlohmann::json::parse(seen[0].metadata)["i"], 2);
  const auto counts = store->feedback_counts();
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts[0].agent_id, "a");
  EXPECT_EQ(counts[0].count, 3);
}

TEST_P(StoreTest, HostileTextIsStoredVerbatim) {
  auto store = open();
  FeedbackRecord r = row("x'); DROP TABLE rlhf_feedback; --", 1);
  r.prompt = "Robert'); DROP TABLE rlhf_jobs;-- \"quoted\" \\ backslash ünïcødé 🙂";
  r.score.reset();
  store->insert_feedback({r});
  std::vector<FeedbackRecord> seen;
  store->scan_feedback({r.agent_id, "", "", 0}, [&](const FeedbackRecord& x) { seen.push_back(x); });
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].prompt, r.prompt);
  EXPECT_FALSE(seen[0].score.has_value());
  EXPECT_EQ(store->count_feedback({"a", "", "", 0}), 0);
  EXPECT_TRUE(store->list_jobs(10).empty());  // rlhf_jobs is still there
}

TEST_P(StoreTest, ExportPagesThroughManyRows) {
  auto store = open();
  std::vector<FeedbackRecord> rows;
  for (int i = 0; i < 4500; ++i) rows.push_back(row("many", i));  // more than one PostgreSQL page (2000)
  store->insert_feedback(rows);
  int64_t n = 0, last_id = 0;
  bool ordered = true;
  store->scan_feedback({"many", "", "", 0}, [&](const FeedbackRecord& r) {
    ordered = ordered && r.id > last_id;
    last_id = r.id;
    ++n;
  });
  EXPECT_EQ(n, 4500);
  EXPECT_TRUE(ordered);
  n = 0;
  store->scan_feedback({"many", "", "", 2500}, [&](const FeedbackRecord&) { ++n; });
  EXPECT_EQ(n, 2500);
}

// The hand-written JSONL encoder writes what nlohmann writes, for every character class.
TEST(FeedbackExport, JsonlLinesMatchNlohmann) {
  std::string all_bytes;
  for (int c = 1; c < 0x80; ++c) all_bytes += static_cast<char>(c);
  const std::vector<std::string> texts = {"", "plain", "quote \" backslash \\ slash /", all_bytes,
                                          "tab\tnew\nline\r\b\f\x01\x1f\x7f", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
                                          "\xE2\x80\xA8\xE2\x80\xA9 separators", std::string(70000, 'x') + "\""};
  for (const std::string& text : texts) {
    FeedbackRecord r;
    r.prompt = text;
    r.response_chosen = "c" + text;
    r.response_rejected = text + "r";
    nlohmann::ordered_json expected;
    expected["prompt"] = r.prompt;
    expected["chosen"] = r.response_chosen;
    expected["rejected"] = r.response_rejected;
    EXPECT_EQ(feedback_jsonl_line(r), expected.dump()) << text.substr(0, 80);
  }
  // Invalid UTF-8 (refused by the API) still exports as valid JSON with U+FFFD.
  FeedbackRecord bad;
  bad.prompt = "a\xFF\xC3" "b\xED\xA0\x80";
  const nlohmann::json parsed = nlohmann::json::parse(feedback_jsonl_line(bad));
  EXPECT_EQ(parsed["prompt"], "a\xEF\xBF\xBD\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

// A group commit stamps all its rows alike: pages must break ties by id, not skip or repeat rows.
TEST_P(StoreTest, PreferencePairsPageThroughTiedTimestamps) {
  auto store = open();
  std::vector<FeedbackRecord> rows;
  for (int i = 0; i < 4500; ++i) {
    rows.push_back(row("tied", i, i < 3000 ? "2025-01-01T00:00:00.000000Z" : "2025-01-01T00:00:01.000000Z"));
  }
  store->insert_feedback({row("other", 0, "2025-01-01T00:00:00.000000Z")});
  store->insert_feedback(rows);
  std::vector<std::string> prompts;
  store->scan_preference_pairs({"tied", "", "", 0}, [&](const PreferencePair& p) {
    prompts.emplace_back(p.prompt);
    EXPECT_EQ(p.chosen, "good " + std::to_string(prompts.size() - 1));
    EXPECT_EQ(p.rejected, "bad " + std::to_string(prompts.size() - 1));
  });
  ASSERT_EQ(prompts.size(), 4500u);
  for (size_t i = 0; i < prompts.size(); ++i) ASSERT_EQ(prompts[i], "prompt " + std::to_string(i));
  int64_t n = 0;
  store->scan_preference_pairs({"tied", "", "", 2500}, [&](const PreferencePair&) { ++n; });
  EXPECT_EQ(n, 2500);
  prompts.clear();
  store->scan_preference_pairs({"tied", "2025-01-01T00:00:00.500000Z", "", 0},
                               [&](const PreferencePair& p) { prompts.emplace_back(p.prompt); });
  ASSERT_EQ(prompts.size(), 1500u);
  EXPECT_EQ(prompts.front(), "prompt 3000");
  EXPECT_EQ(store->count_feedback({"tied", "", "", 0}), 4500);
}

TEST_P(StoreTest, JobRowsRoundTrip) {
  auto store = open();
  JobRecord job;
  job.job_name = "J";
  job.algorithm = "dpo";
  job.config = R"({"a":1})";
  job.work_dir = "/tmp/x";
  const int64_t id = store->insert_job(job);
  auto found = store->find_job(id);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->status, JobStatus::kQueued);
  EXPECT_TRUE(found->started_at.empty());
  EXPECT_FALSE(found->exit_code.has_value());
  JobUpdate update;
  update.status = JobStatus::kRunning;
  update.started_at = "2025-02-03T04:05:06.000007Z";
  update.pid = 1234;
  store->update_job(id, update);
  found = store->find_job(id);
  EXPECT_EQ(found->status, JobStatus::kRunning);
  EXPECT_EQ(found->started_at, "2025-02-03T04:05:06.000007Z");
  EXPECT_EQ(found->pid, 1234);
  EXPECT_EQ(found->job_name, "J");  // untouched
  update = JobUpdate{};
  update.status = JobStatus::kSucceeded;
  update.exit_code = 0;
  store->update_job(id, update);
  found = store->find_job(id);
  EXPECT_EQ(found->status, JobStatus::kSucceeded);
  ASSERT_TRUE(found->exit_code.has_value());
  EXPECT_EQ(*found->exit_code, 0);
  EXPECT_EQ(found->pid, 1234);
  EXPECT_EQ(store->jobs_with_status(JobStatus::kSucceeded).size(), 1u);
  EXPECT_TRUE(store->jobs_with_status(JobStatus::kRunning).empty());
  EXPECT_FALSE(store->find_job(id + 100).has_value());
}

TEST_P(StoreTest, ConcurrentGroupCommitsKeepEveryRow) {
  auto store = open();
  FeedbackCommitter committer(*store);
  std::vector<std::thread> threads;
  std::vector<std::vector<int64_t>> ids(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        const auto got = committer.insert({row("c", t * 100 + i)});
        ids[t].push_back(got.at(0));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<int64_t> unique;
  for (const auto& list : ids) unique.insert(list.begin(), list.end());
  EXPECT_EQ(unique.size(), 400u);
  EXPECT_EQ(store->count_feedback({"c", "", "", 0}), 400);
  EXPECT_LE(committer.commits(), 400);
}

// More callers than pooled connections (PostgreSQL: 2): every call is served, in turn, and each
// export sees whole rows (single-page exports run outside a transaction, longer ones inside one).
TEST_P(StoreTest, MoreCallersThanConnectionsAreAllServed) {
  if (url_.empty()) url_ = testing::fresh_store_url(GetParam(), dir_, "pool");
  StoreOptions options;
  options.url = url_;
  options.pool_size = 2;
  std::unique_ptr<Store> store = open_store(options);
  std::vector<FeedbackRecord> rows;
  for (int i = 0; i < 2100; ++i) rows.push_back(row(i < 100 ? "small" : "large", i));
  store->insert_feedback(rows);
  std::atomic<int> exports{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        const std::string agent = (t + i) % 3 == 0 ? "large" : "small";
        int64_t seen = 0;
        store->scan_preference_pairs({agent, "", "", 0}, [&](const PreferencePair& pair) {
          if (pair.prompt.rfind("prompt ", 0) != 0) ++wrong;
          ++seen;
        });
        if (seen != (agent == "large" ? 2000 : 100)) ++wrong;
        ++exports;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(exports.load(), 72);
  EXPECT_EQ(wrong.load(), 0);
  int64_t limited = 0;
  store->scan_preference_pairs({"large", "", "", 7}, [&](const PreferencePair&) { ++limited; });
  EXPECT_EQ(limited, 7);
}

TEST_P(StoreTest, JsonlAndParquetExportsReadByPandas) {
  auto store = open();
  store->insert_feedback({row("agent", 1), row("agent", 2), row("other", 3)});
  const std::string jsonl = dir_.path() + "/out.jsonl";
  EXPECT_EQ(export_feedback_to_file(*store, {"agent", "", "", 0}, ExportFormat::kJsonl, jsonl), 2);
  const std::string parquet = dir_.path() + "/out.parquet";
  EXPECT_EQ(export_feedback_to_file(*store, {"agent", "", "", 0}, ExportFormat::kParquet, parquet), 2);
  for (const auto& [path, kind] : {std::pair{jsonl, "jsonl"}, std::pair{parquet, "parquet"}}) {
    const nlohmann::json read = testing::read_export_with_pandas(path, kind);
    EXPECT_EQ(read["columns"], nlohmann::json({"prompt", "chosen", "rejected"})) << kind;
    ASSERT_EQ(read["rows"].size(), 2u) << kind;
    EXPECT_EQ(read["rows"][0]["prompt"], "prompt 1");
    EXPECT_EQ(read["rows"][1]["chosen"], "good 2");
    EXPECT_EQ(read["rows"][1]["rejected"], "bad 2");
  }
  EXPECT_EQ(testing::read_export_with_pandas(parquet, "parquet")["schema"]["prompt"], "string");
  // An empty export is still a readable file with the columns.
  const std::string empty = dir_.path() + "/empty.parquet";
  EXPECT_EQ(export_feedback_to_file(*store, {"nobody", "", "", 0}, ExportFormat::kParquet, empty), 0);
  const nlohmann::json read = testing::read_export_with_pandas(empty, "parquet");
  EXPECT_EQ(read["columns"], nlohmann::json({"prompt", "chosen", "rejected"}));
  EXPECT_TRUE(read["rows"].empty());
}

std::string job_text(const std::string& call) {
  return "train rlhf \"F\" {\n  base_model: \"models/m\"\n  algorithm: \"dpo\"\n  dataset: " + call +
         "\n  output: { dir: \"runs/f\" }\n}\n";
}

TEST_P(StoreTest, FeedbackExportInAJobResolvesAgainstTheStore) {
  auto store = open();
  for (int i = 0; i < 3; ++i) store->insert_feedback({row("support", i)});
  install_feedback_source_resolver();
  ConfigOverrides overrides;
  overrides.use_environment = false;
  const std::string export_dir = dir_.path() + "/exports";
  {
    ScopedExportDirectory scoped(export_dir);
    const auto file = std::make_shared<SourceFile>(
        "job.n3", job_text("feedback.export(\"support\", min_samples: 3, store: \"" + url_ + "\")"));
    const ResolvedJobFile resolved = resolve_job_file(parse_job_text(file), overrides, {});
    const std::string path = resolved.jobs.at(0).config.dataset.path;
    EXPECT_EQ(path, export_dir + "/feedback-support.jsonl");
    EXPECT_FALSE(resolved.jobs.at(0).config.dataset.call.has_value());
    const nlohmann::json read = testing::read_export_with_pandas(path, "jsonl");
    EXPECT_EQ(read["rows"].size(), 3u);
  }
  // Fewer rows than min_samples: RLHF023 with the count, at the call's position.
  {
    ScopedExportDirectory scoped(export_dir);
    const auto file = std::make_shared<SourceFile>(
        "job.n3", job_text("feedback.export(\"support\", min_samples: 10, store: \"" + url_ + "\")"));
    try {
      resolve_job_file(parse_job_text(file), overrides, {});
      FAIL() << "expected RLHF023";
    } catch (const JobFileError& error) {
      ASSERT_FALSE(error.diagnostics().empty());
      const Diagnostic& d = error.diagnostics().front();
      EXPECT_EQ(d.code, ErrorCode::kInsufficientData);
      EXPECT_NE(d.message.find("has 3 feedback rows, fewer than min_samples 10"), std::string::npos) << d.message;
      EXPECT_EQ(d.location.line, 4);
    }
  }
  set_data_source_resolver(nullptr);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::Values(Backend::kSqlite, Backend::kPostgresql),
                         [](const auto& info) { return testing::backend_name(info.param); });

TEST(FeedbackSourceTest, NoStoreIsRlhf005AndUnknownArgumentsAreRefused) {
  install_feedback_source_resolver();
  ::unsetenv("N3RLHF_FEEDBACK_STORE");
  ConfigOverrides overrides;
  overrides.use_environment = false;
  const auto code_of = [&](const std::string& call) {
    try {
      resolve_job_file(parse_job_text(std::make_shared<SourceFile>("job.n3", job_text(call))), overrides, {});
    } catch (const JobFileError& error) {
      return error.diagnostics().front().code;
    }
    return ErrorCode::kMissingField;
  };
  EXPECT_EQ(code_of("feedback.export(\"a\")"), ErrorCode::kMissingEnvironmentVariable);
  EXPECT_EQ(code_of("feedback.export(\"a\", bogus: 1)"), ErrorCode::kMissingField);
  EXPECT_EQ(code_of("feedback.export(\"a\", since: \"yesterday\")"), ErrorCode::kInvalidHyperparameter);
  EXPECT_EQ(code_of("feedback.export(\"a\", min_samples: \"many\")"), ErrorCode::kInvalidHyperparameter);
  EXPECT_EQ(code_of("other.source(\"a\")"), ErrorCode::kDatasetNotFound);
  set_data_source_resolver(nullptr);
  // Without a resolver the call stays RLHF020, as in programs that have no store.
  EXPECT_EQ(code_of("feedback.export(\"a\")"), ErrorCode::kDatasetNotFound);
}

TEST(TimestampTest, CanonicalFormsAndRefusals) {
  std::string out;
  ASSERT_TRUE(canonical_timestamp("2025-01-31", &out));
  EXPECT_EQ(out, "2025-01-31T00:00:00.000000Z");
  ASSERT_TRUE(canonical_timestamp("2025-01-31T12:00:00.5+02:00", &out));
  EXPECT_EQ(out, "2025-01-31T10:00:00.500000Z");
  ASSERT_TRUE(canonical_timestamp("2024-02-29T23:59:59Z", &out));
  EXPECT_FALSE(canonical_timestamp("2025-02-29", &out));
  EXPECT_FALSE(canonical_timestamp("2025-13-01", &out));
  EXPECT_FALSE(canonical_timestamp("yesterday", &out));
  EXPECT_FALSE(canonical_timestamp("2025-01-01T25:00:00Z", &out));
}

}  // namespace
}  // namespace n3rlhf::service
