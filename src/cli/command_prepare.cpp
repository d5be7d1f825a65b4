// command_prepare.cpp: `n3rlhf prepare JOB_FILE_OR_JSONL [options]` tokenizes a JSONL data set
// into HDF5 shards and a manifest. With a job file it prepares the job's dataset (and its
// eval_dataset) with the job's tokenizer and settings; with a JSONL file the settings come from
// the options. Prints the counts (rows read, kept, skipped by reason) and the throughput.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/config_builder.hpp"
#include "core/input_file.hpp"
#include "core/error.hpp"
#include "io/batching.hpp"
#include "cli/prepare_safety.hpp"
#include "io/prepare.hpp"
#include "io/prepared_dataset.hpp"
#include "io/remote_dataset.hpp"
#include "storage/hub_cache.hpp"
#include "storage/object_uri.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

namespace {

struct PrepareOptions {
  std::string input;
  std::string job_name;
  std::vector<std::string> assignments;
  std::string output_dir;
  std::string tokenizer;
  std::string kind;
  std::string algorithm;
  int64_t max_length = -1;
  int64_t max_prompt_length = -1;
  std::string truncation_mode;
  std::string chat_template;
  std::string on_bad_rows;
  std::vector<std::string> columns;
  int threads = 0;
  int64_t shard_tokens = int64_t{32} << 20;
  bool json = false;
  int world_size = 1;
};

template <typename Enum>
Enum parse_enum(const std::string& option, const std::string& value, const std::vector<std::string>& names) {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == value) return static_cast<Enum>(i);
  }
  std::string known;
  for (const std::string& name : names) known += (known.empty() ? "" : ", ") + name;
  throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "--" + option + " takes one of " + known + ", not \"" + value + "\"",
                           {{"argument", "--" + option}});
}

const ResolvedJob& select_job(const ResolvedJobFile& file, const std::string& name) {
  std::string names;
  for (const ResolvedJob& job : file.jobs) names += (names.empty() ? "" : ", ") + ("\"" + job.config.job_name + "\"");
  if (name.empty()) {
    if (file.jobs.size() == 1) return file.jobs.front();
    throw ConfigurationError(ErrorCode::kMissingField, "the file has several jobs; choose one with --job", {{"jobs", names}});
  }
  if (const ResolvedJob* job = file.find(name)) return *job;
  throw ConfigurationError(ErrorCode::kMissingField, "no job named \"" + name + "\" in the file", {{"jobs", names}});
}

// --column chosen=answer_good sets data.chosen_key.
void apply_column(const std::string& assignment, DataConfig* data) {
  const size_t equals = assignment.find('=');
  const std::string role = assignment.substr(0, equals);
  const std::string key = equals == std::string::npos ? "" : assignment.substr(equals + 1);
  std::string* field = role == "prompt"       ? &data->prompt_key
                       : role == "chosen"     ? &data->chosen_key
                       : role == "rejected"   ? &data->rejected_key
                       : role == "completion" ? &data->completion_key
                       : role == "label"      ? &data->label_key
                       : role == "text"       ? &data->text_key
                                              : nullptr;
  if (field == nullptr || key.empty()) {
    throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                             "--column takes ROLE=KEY with ROLE one of prompt, chosen, rejected, completion, label, text; not \"" +
                                 assignment + "\"",
                             {{"argument", "--column"}});
  }
  *field = key;
}

std::string summary(const PrepareReport& report, const std::string& directory) {
  const PreparedManifest& m = report.manifest;
  const PrepareCounts& c = m.counts;
  std::string skipped;
  for (size_t i = 0; i < kBadRowReasonCount; ++i) {
    if (c.rows_skipped_by_reason[i] == 0) continue;
    skipped += (skipped.empty() ? " (" : ", ") + bad_row_reason_name(static_cast<BadRowReason>(i)) + " " +
               std::to_string(c.rows_skipped_by_reason[i]);
  }
  if (!skipped.empty()) skipped += ")";
  char throughput[160];
  std::snprintf(throughput, sizeof throughput, "  %.2f MB in %.2f s: %.2f MB/s, %.0f rows/s\n",
                static_cast<double>(m.source_bytes) / 1e6, report.seconds, report.megabytes_per_second(), report.rows_per_second());
  return "prepared " + m.source_path + " -> " + directory + " (" + dataset_kind_name(m.dataset_kind) + ", " +
         std::to_string(m.shards.size()) + " shard" + (m.shards.size() == 1 ? "" : "s") + ")\n" +
         "  rows: " + std::to_string(c.rows_read) + " read, " + std::to_string(c.rows_kept) + " kept, " +
         std::to_string(c.rows_skipped()) + " skipped" + skipped + "\n" +
         (m.tokenization.contains("safety_filter")
              ? "  safety filter: " + std::to_string(c.rows_unsafe) + " rows unsafe, " + std::to_string(c.rows_dropped_unsafe) +
                    " dropped\n"
              : std::string()) +
         "  examples " + std::to_string(c.examples) + ", sequences " + std::to_string(c.sequences) + ", tokens " +
         std::to_string(c.tokens) + ", truncated sequences " + std::to_string(c.truncated_sequences) + "\n" + throughput;
}

// hidden_size (GPT-2: n_embd) of the model's config.json, 0 when it cannot be read: the width of
// shared-prefix rows follows it (collate_options_from_config). Read here without the model
// library, which would bring libtorch into the tool's plain commands.
int64_t model_width(const std::string& model_directory) {
  std::string text;
  try {
    text = read_input_file(model_directory + "/config.json", InputKind::kModelConfig);
  } catch (const RlhfError&) {
    return 0;
  }
  const nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) return 0;
  for (const char* key : {"hidden_size", "n_embd"}) {
    if (config.contains(key) && config[key].is_number_integer()) return config[key].get<int64_t>();
  }
  return 0;
}

// The padding the job's batching will cost on this data (epoch 0, every rank), so that a user
// sees it before training: RLHF023 (too little data for one global batch) shows here as well.
std::string batching_report(const RLHFConfig& config, const std::string& directory, int world_size) {
  const PreparedDataset data = PreparedDataset::open(directory);
  const Hyperparameters& h = config.hyperparameters;
  std::vector<int64_t> train;
  if (config.eval_dataset.path.empty()) {
    train = split_train_eval(data.example_count(), config.data.eval_fraction, static_cast<uint64_t>(h.seed)).train;
  } else {
    for (int64_t e = 0; e < data.example_count(); ++e) train.push_back(e);
  }
  const BatchingOptions batching = batching_options_from_config(config, world_size);
  std::vector<int64_t> lengths = data.example_lengths();
  if (batching.packing) {
    for (int64_t e = 0; e < data.example_count(); ++e) lengths[static_cast<size_t>(e)] = data.example_tokens(e);
  }
  const EpochPlan plan = EpochPlan::build(train, lengths, batching, 0);
  const CollateOptions collate = collate_options_from_config(config, data.pad_token_id(), model_width(config.base_model));
  const PaddingStats padding = plan_padding(plan, data, collate);
  char line[300];
  std::snprintf(line, sizeof line, "  batching on %d rank%s: %lld steps per epoch of %lld %s, padding waste %.1f%%%s", world_size,
                world_size == 1 ? "" : "s", static_cast<long long>(plan.global_batch_count()), static_cast<long long>(h.batch_size),
                batching.packing ? "packed rows" : "examples", 100.0 * padding.waste(),
                batching.packing ? " (packed)" : batching.group_by_length ? " (grouped by length)" : "");
  std::string report = line;
  if (collate.share_prefix) {
    std::snprintf(line, sizeof line, ", prompts shared: %.1f%% of the tokens computed once", 100.0 * padding.shared());
    report += line;
  }
  return report + "\n";
}

}  // namespace

int prepare_command(const std::vector<std::string>& arguments) {
  PrepareOptions options;
  CommandOptions command({"prepare",
                          "n3rlhf prepare JOB_FILE_OR_JSONL [options]\n"
                          "Tokenizes a JSONL data set into HDF5 shards and a manifest. With a job file: the job's dataset\n"
                          "(and eval_dataset), tokenizer and settings. With a JSONL file: --tokenizer and the options below"});
  command.add()
      ("job", po::value(&options.job_name), "the job, when the file has several")
      ("set", po::value(&options.assignments)->composing(), "override a job field: --set hyperparameters.max_length=512")
      ("out,o", po::value(&options.output_dir), "output directory (default: data.prepared_dir, else <data>.prepared beside the data)")
      ("tokenizer", po::value(&options.tokenizer), "tokenizer.json or a model directory (JSONL input; overrides a job's)")
      ("algorithm", po::value(&options.algorithm), "JSONL input: the algorithm the data is for (dpo, kto, sft, ppo, ...; default dpo)")
      ("kind", po::value(&options.kind), "JSONL input: preference, unpaired, sft or prompts (instead of --algorithm)")
      ("max-length", po::value(&options.max_length), "JSONL input: longest prompt + response in tokens (default 1024)")
      ("max-prompt-length", po::value(&options.max_prompt_length), "JSONL input: longest prompt in tokens (default 512)")
      ("truncation-mode", po::value(&options.truncation_mode), "JSONL input: keep_start or keep_end (default keep_end)")
      ("chat-template", po::value(&options.chat_template), "JSONL input: chatml or llama3, for conversational rows")
      ("on-bad-rows", po::value(&options.on_bad_rows), "JSONL input: skip (count and skip) or error (default skip)")
      ("column", po::value(&options.columns)->composing(), "JSONL input: a column name, ROLE=KEY: --column chosen=good")
      ("threads", po::value(&options.threads), "worker threads (default 0: one per core); the output does not depend on it")
      ("shard-tokens", po::value(&options.shard_tokens), "tokens per shard before a new one starts (default 33554432)")
      ("world-size", po::value(&options.world_size), "job file: ranks to report the batching for (default 1)")
      ("json", po::bool_switch(&options.json), "print the manifest(s) as JSON instead of a summary");
  command.positional("input", &options.input);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (options.input.empty()) return command.usage_error("give a job file or a JSONL file");

  struct Work {
    std::string source;
    std::string output_dir;
  };
  std::vector<Work> work;
  std::optional<RLHFConfig> job_config;
  std::string tokenizer_path = options.tokenizer;
  TokenizationSettings settings;
  const std::string extension = std::filesystem::path(options.input).extension().string();
  const bool is_jsonl = extension == ".jsonl" || extension == ".json";
  if (!is_jsonl) {
    ConfigOverrides overrides;
    overrides.assignments = options.assignments;
    const ResolvedJobFile file = load_job_file(options.input, overrides, ValidationContext{});
    // Hub ids from the local Hugging Face cache; s3:// / gs:// data sets through the local cache.
    RLHFConfig config = select_job(file, options.job_name).config;
    resolve_model_paths(config);
    for (DatasetSource* source : {&config.dataset, &config.eval_dataset}) {
      if (is_object_uri(source->path)) source->path = fetch_remote_dataset(source->path);
    }
    job_config = config;
    settings = TokenizationSettings::from_config(config);
    if (tokenizer_path.empty()) tokenizer_path = config.tokenizer.empty() ? config.base_model : config.tokenizer;
    if (config.dataset.path.empty()) {
      throw ConfigurationError(ErrorCode::kMissingField, "the job names no dataset file to prepare", {{"field", "dataset"}});
    }
    work.push_back({config.dataset.path, options.output_dir.empty()
                                             ? default_prepared_dir(config.dataset.path, config.data.prepared_dir, "train")
                                             : options.output_dir});
    if (!config.eval_dataset.path.empty()) {
      work.push_back({config.eval_dataset.path,
                      options.output_dir.empty() ? default_prepared_dir(config.eval_dataset.path, config.data.prepared_dir, "eval")
                                                 : options.output_dir + "/eval"});
    }
  } else {
    if (tokenizer_path.empty()) return command.usage_error("a JSONL input needs --tokenizer PATH");
    RLHFConfig config;
    if (!options.algorithm.empty()) config.algorithm = parse_enum<Algorithm>("algorithm", options.algorithm, algorithm_names());
    settings = TokenizationSettings::from_config(config);
    if (!options.kind.empty() && !parse_dataset_kind(options.kind, &settings.kind)) {
      throw ConfigurationError(ErrorCode::kInvalidHyperparameter,
                               "--kind takes preference, unpaired, sft or prompts, not \"" + options.kind + "\"", {{"argument", "--kind"}});
    }
    if (options.max_length >= 0) settings.max_length = options.max_length;
    if (options.max_prompt_length >= 0) settings.max_prompt_length = options.max_prompt_length;
    if (settings.max_length < 2 || settings.max_prompt_length < 0 ||
        (settings.max_prompt_length > 0 && settings.max_prompt_length >= settings.max_length)) {
      throw ConfigurationError(ErrorCode::kIncompatibleOptions,
                               "--max-prompt-length must be below --max-length (and --max-length at least 2)",
                               {{"argument", "--max-prompt-length"}});
    }
    if (!options.truncation_mode.empty()) {
      settings.truncation_mode = parse_enum<TruncationMode>("truncation-mode", options.truncation_mode, truncation_mode_names());
    }
    if (!options.on_bad_rows.empty()) settings.on_bad_rows = parse_enum<BadRowPolicy>("on-bad-rows", options.on_bad_rows, bad_row_policy_names());
    settings.chat_template = options.chat_template;
    for (const std::string& column : options.columns) apply_column(column, &settings.columns);
    work.push_back({options.input, options.output_dir.empty() ? default_prepared_dir(options.input, "", "train") : options.output_dir});
  }

  // A job's safety block filters its rows (docs/safety.md); a bare JSONL input has none.
  const std::optional<PrepareSafetyFilter> safety = job_config ? job_prepare_safety_filter(*job_config) : std::nullopt;
  nlohmann::json manifests = nlohmann::json::array();
  for (const Work& item : work) {
    PrepareRequest request{item.source, item.output_dir, tokenizer_path, settings};
    request.safety_filter = safety ? &*safety : nullptr;
    request.threads = options.threads;
    request.shard_max_tokens = options.shard_tokens;
    const PrepareReport report = prepare_dataset(request);
    if (options.json) {
      nlohmann::json entry = report.manifest.to_json();
      entry["directory"] = item.output_dir;
      entry["seconds"] = report.seconds;
      manifests.push_back(entry);
    } else {
      std::cout << summary(report, item.output_dir);
      if (job_config && &item == &work.front()) {
        if (options.world_size < 1) {
          throw ConfigurationError(ErrorCode::kInvalidHyperparameter, "--world-size must be positive", {{"argument", "--world-size"}});
        }
        try {
          std::cout << batching_report(*job_config, item.output_dir, options.world_size);
        } catch (const DatasetError& error) {
          // The data is prepared; the job as configured could not train on it.
          std::cerr << "warning: " << error.what() << "\n";
        }
      }
    }
  }
  if (options.json) std::cout << (manifests.size() == 1 ? manifests.front() : manifests).dump(2) << "\n";
  return 0;
}

}  // namespace n3rlhf
