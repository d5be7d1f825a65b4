// config_builder.cpp: applies a job block, the environment and --set overrides to RLHFConfig
// through the schema, checking each value's type and reporting unknown keys with suggestions.
#include "core/config_builder.hpp"

#include <cmath>
#include <cstdlib>

#include "core/config_schema.hpp"
#include "core/data_source_resolver.hpp"
#include "core/dsl_parser.hpp"
#include "core/strings.hpp"
#include "core/suggest.hpp"

namespace n3rlhf {

const ResolvedJob* ResolvedJobFile::find(const std::string& name) const {
  for (const ResolvedJob& job : jobs) {
    if (job.config.job_name == name) return &job;
  }
  return nullptr;
}

namespace {

std::vector<std::string> all_field_paths() {
  std::vector<std::string> paths;
  for (const FieldSpec& field : config_fields()) paths.push_back(field.path);
  return paths;
}

class JobBuilder {
 public:
  JobBuilder(DiagnosticSink& sink, ResolvedJob& job) : sink_(sink), job_(job) {}

  void apply_block(const DslValue& block, const std::string& section) {
    for (const DslEntry& entry : block.entries) {
      const std::string path = section.empty() ? entry.key : section + "." + entry.key;
      apply_entry(path, entry.key, entry.key_location, entry.value, section);
    }
  }

  void apply_environment() {
    for (const FieldSpec& field : config_fields()) {
      if (field.env.empty()) continue;
      const char* text = std::getenv(field.env.c_str());
      if (text == nullptr || *text == '\0') continue;
      SourceLocation origin;
      origin.origin = "environment " + field.env + "=" + text;
      apply_field(field, value_from_text(field, text, origin));
    }
  }

  void apply_assignment(const std::string& assignment) {
    SourceLocation origin;
    origin.origin = "--set " + assignment;
    const size_t equals = assignment.find('=');
    if (equals == std::string::npos || equals == 0) {
      sink_.error(ErrorCode::kMissingField, origin, "an override must be key.path=value",
                  "for example --set hyperparameters.learning_rate=5e-6");
      return;
    }
    const std::string path = assignment.substr(0, equals);
    const std::string text = assignment.substr(equals + 1);
    if (const FieldSpec* field = find_config_field(path)) {
      apply_field(*field, value_from_text(*field, text, origin));
      return;
    }
    if (const FieldSpec* kind = find_config_field(path + ".kind")) {
      apply_field(*kind, value_from_text(*kind, text, origin));
      return;
    }
    sink_.error(ErrorCode::kMissingField, origin, "unknown configuration key '" + path + "'",
                did_you_mean(path, all_field_paths()));
  }

 private:
  void apply_entry(const std::string& path, const std::string& key, const SourceLocation& key_location,
                   const DslValue& value, const std::string& section) {
    if (path == "metadata") {
      if (value.kind != DslValue::Kind::kBlock) {
        sink_.error(ErrorCode::kInvalidHyperparameter, value.location, std::string("'metadata' must be a block, found ") + dsl_kind_name(value.kind),
                    "write metadata: { team: \"...\" }");
        return;
      }
      config().metadata = metadata_json(value);
      job_.origins[path] = value.location;
      return;
    }
    // The seed's spelling: orpo.alpha is ORPO's lambda, orpo.beta here (TRL's name).
    if (path == "orpo.alpha") {
      if (job_.is_set("orpo.beta")) {
        sink_.error(ErrorCode::kIncompatibleOptions, key_location, "orpo.alpha and orpo.beta are the same weight, given twice",
                    "keep one of them");
        return;
      }
      apply_field(*find_config_field("orpo.beta"), value);
      return;
    }
    if (const FieldSpec* field = find_config_field(path)) {
      if (path == "orpo.beta" && job_.is_set("orpo.beta")) {
        sink_.error(ErrorCode::kIncompatibleOptions, key_location, "orpo.alpha and orpo.beta are the same weight, given twice",
                    "keep one of them");
        return;
      }
      apply_field(*field, value);
      return;
    }
    if (is_config_section(path)) {
      if (value.kind == DslValue::Kind::kBlock) {
        apply_block(value, path);
        return;
      }
      // `layout: "colocated"` is shorthand for `layout: { kind: "colocated" }`.
      const FieldSpec* kind = find_config_field(path + ".kind");
      if (kind && (value.kind == DslValue::Kind::kString || value.kind == DslValue::Kind::kReference)) {
        apply_field(*kind, value);
        return;
      }
      sink_.error(ErrorCode::kInvalidHyperparameter, value.location,
                  "'" + path + "' must be a block, found " + dsl_kind_name(value.kind),
                  "write " + key + ": { ... }");
      return;
    }
    std::string hint = did_you_mean(key, keys_under(section));
    if (hint.empty()) {
      // A known key in the wrong section: `learning_rate` at the top level.
      for (const FieldSpec& field : config_fields()) {
        if (field.key() == key && field.section() != section) {
          hint = "'" + key + "' belongs in " + (field.section().empty() ? "the job's top level" : "'" + field.section() + "'") +
                 ": " + field.path;
          break;
        }
      }
    }
    const std::string where = section.empty() ? "job '" + job_.config.job_name + "'" : "'" + section + "'";
    sink_.error(ErrorCode::kMissingField, key_location, "unknown key '" + key + "' in " + where, hint);
  }

  // A metadata block as JSON: its values as written (references as their dotted text, calls as
  // their text).
  static nlohmann::json metadata_json(const DslValue& value) {
    switch (value.kind) {
      case DslValue::Kind::kString:
      case DslValue::Kind::kReference:
      case DslValue::Kind::kCall: return value.text;
      case DslValue::Kind::kInteger: return value.integer;
      case DslValue::Kind::kFloat: return value.number;
      case DslValue::Kind::kBool: return value.boolean;
      case DslValue::Kind::kNull: return nullptr;
      case DslValue::Kind::kList: {
        nlohmann::json items = nlohmann::json::array();
        for (const DslValue& item : value.items) items.push_back(metadata_json(item));
        return items;
      }
      case DslValue::Kind::kBlock: {
        nlohmann::json entries = nlohmann::json::object();
        for (const DslEntry& entry : value.entries) entries[entry.key] = metadata_json(entry.value);
        return entries;
      }
    }
    return nullptr;
  }

  // An override's text as the field's type: strings are taken verbatim, other types parsed
  // with the job-file value syntax (so lists and booleans read the same as in a file).
  DslValue value_from_text(const FieldSpec& field, const std::string& text, const SourceLocation& origin) {
    DslValue value;
    value.location = origin;
    if (field.type == FieldType::kString || field.type == FieldType::kEnum ||
        (field.type == FieldType::kDataset && text.find('(') == std::string::npos)) {
      // Quotes are optional: --set base_model=models/x and --set base_model="models/x" agree.
      DslValue parsed;
      if (parse_dsl_value_text(text, origin.origin, &parsed) && parsed.kind == DslValue::Kind::kString) return parsed;
      value.kind = DslValue::Kind::kString;
      value.text = text;
      return value;
    }
    if (field.type == FieldType::kBool) {
      if (text == "1" || text == "yes" || text == "on" || text == "True" || text == "TRUE") text_bool(value, true);
      else if (text == "0" || text == "no" || text == "off" || text == "False" || text == "FALSE") text_bool(value, false);
      if (value.kind == DslValue::Kind::kBool) return value;
    }
    if (field.type == FieldType::kStringList && !text.empty() && text.front() != '[') {
      value.kind = DslValue::Kind::kList;
      size_t start = 0;
      while (start <= text.size()) {
        const size_t comma = std::min(text.find(',', start), text.size());
        DslValue item;
        item.kind = DslValue::Kind::kString;
        item.location = origin;
        item.text = text.substr(start, comma - start);
        if (!item.text.empty()) value.items.push_back(item);
        start = comma + 1;
      }
      return value;
    }
    DslValue parsed;
    if (parse_dsl_value_text(text, origin.origin, &parsed)) return parsed;
    value.kind = DslValue::Kind::kString;  // reported as a type error by apply_field
    value.text = text;
    return value;
  }

  static void text_bool(DslValue& value, bool b) {
    value.kind = DslValue::Kind::kBool;
    value.boolean = b;
  }

  void type_error(const FieldSpec& field, const DslValue& value, const std::string& expected,
                  std::string hint = "") {
    sink_.error(ErrorCode::kInvalidHyperparameter, value.location,
                "'" + field.path + "' must be " + expected + ", found " + dsl_kind_name(value.kind) +
                    (value.kind == DslValue::Kind::kBlock || value.kind == DslValue::Kind::kList ? "" : " " + dsl_value_summary(value)),
                std::move(hint));
  }

  void apply_field(const FieldSpec& field, const DslValue& value) {
    DslValue coerced = value;
    switch (field.type) {
      case FieldType::kString:
        if (value.kind == DslValue::Kind::kReference) {
          return type_error(field, value, "a string", "put it in quotes: \"" + value.text + "\"");
        }
        if (value.kind != DslValue::Kind::kString) return type_error(field, value, "a string");
        break;
      case FieldType::kInteger:
        if (value.kind == DslValue::Kind::kFloat && std::floor(value.number) == value.number &&
            std::fabs(value.number) < 9.0e15) {
          coerced.kind = DslValue::Kind::kInteger;  // 1e3 is an integer
          coerced.integer = static_cast<int64_t>(value.number);
        } else if (value.kind != DslValue::Kind::kInteger) {
          return type_error(field, value, "an integer");
        }
        break;
      case FieldType::kFloat:
      case FieldType::kOptionalFloat:
        if (value.kind == DslValue::Kind::kNull && field.type == FieldType::kOptionalFloat) {
          field.reset(config());  // null unsets an optional number
          job_.origins[field.path] = value.location;
          return;
        }
        if (!value.is_number()) return type_error(field, value, "a number");
        break;
      case FieldType::kBool:
        if (value.kind != DslValue::Kind::kBool) return type_error(field, value, "true or false");
        break;
      case FieldType::kEnum: {
        if (value.kind != DslValue::Kind::kString && value.kind != DslValue::Kind::kReference) {
          return type_error(field, value, "one of " + join(*field.choices));
        }
        std::string text = value.text;
        for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (field.path == "algorithm" && (text == "reward" || text == "rm")) text = "reward_model";
        if (field.path == "peft.method" && text == "full") text = "none";  // the seed's name for full fine-tuning
        bool known = false;
        for (const std::string& choice : *field.choices) known = known || choice == text;
        if (!known) {
          const ErrorCode code = field.path == "algorithm" ? ErrorCode::kInvalidAlgorithm : ErrorCode::kInvalidHyperparameter;
          std::string hint = did_you_mean(text, *field.choices);
          if (hint.empty()) hint = "supported: " + join(*field.choices);
          sink_.error(code, value.location,
                      "unknown " + (field.path == "algorithm" ? std::string("algorithm") : "value for '" + field.path + "'") +
                          " \"" + value.text + "\"",
                      hint);
          return;
        }
        coerced.text = text;
        break;
      }
      case FieldType::kStringList:
        if (value.kind == DslValue::Kind::kString) {
          coerced.kind = DslValue::Kind::kList;
          coerced.items = {value};
        } else if (value.kind == DslValue::Kind::kList) {
          for (const DslValue& item : value.items) {
            if (item.kind != DslValue::Kind::kString) return type_error(field, item, "a list of strings");
          }
        } else {
          return type_error(field, value, "a list of strings");
        }
        break;
      case FieldType::kRewardList: {
        // A list of calls; one call alone, or a bare name (`repetition`, "repetition") for a call
        // without arguments, reads as a list of one.
        const std::string expected = "a list of reward calls such as [exact_answer(column: \"answer\"), reward_model(weight: 0.5)]";
        const auto as_call = [](const DslValue& item, DslValue* call) {
          if (item.kind == DslValue::Kind::kCall) {
            *call = item;
            return true;
          }
          if (item.kind != DslValue::Kind::kReference && item.kind != DslValue::Kind::kString) return false;
          *call = item;
          call->kind = DslValue::Kind::kCall;
          return true;
        };
        coerced.kind = DslValue::Kind::kList;
        coerced.items.clear();
        if (value.kind == DslValue::Kind::kList) {
          for (const DslValue& item : value.items) {
            DslValue call;
            if (!as_call(item, &call)) return type_error(field, item, expected);
            coerced.items.push_back(call);
          }
        } else {
          DslValue call;
          if (!as_call(value, &call)) return type_error(field, value, expected);
          coerced.items.push_back(call);
        }
        break;
      }
      case FieldType::kDataset:
        if (value.kind != DslValue::Kind::kString && value.kind != DslValue::Kind::kCall) {
          return type_error(field, value, "a path string or a call such as feedback.export(\"agent\")");
        }
        break;
    }
    field.assign(config(), coerced);
    job_.origins[field.path] = value.location;
  }

  RLHFConfig& config() { return job_.config; }

  DiagnosticSink& sink_;
  ResolvedJob& job_;
};

// Defaults that depend on other fields, applied after every override.
void derive_defaults(ResolvedJob& job) {
  RLHFConfig& config = job.config;
  LayoutConfig& layout = config.distributed.layout;
  if (!job.is_set("distributed.layout.kind") && layout.total() > 0) layout.kind = LayoutKind::kSplit;
  if (config.algorithm == Algorithm::kIpo && !job.is_set("dpo.loss_type")) config.dpo.loss_type = DpoLossType::kIpo;
  // An object-store output.dir is mirrored from a local runs/<job name> (docs/storage.md).
  const auto object_store = [](const std::string& text) { return text.rfind("s3://", 0) == 0 || text.rfind("gs://", 0) == 0; };
  if (object_store(config.output.dir) && config.output.remote_dir.empty()) {
    config.output.remote_dir = config.output.dir;
    config.output.dir.clear();
  }
  if (config.output.dir.empty()) {
    const std::string& registry = config.output.model_registry;
    // "s3://...", "mlflow:/name": a registry that is not a directory.
    const bool remote = registry.find(":/") != std::string::npos;
    config.output.dir = (!registry.empty() && !remote) ? registry : "runs/" + config.job_name;
  }
  if (config.logging.run_name.empty()) config.logging.run_name = config.job_name;
}

void check_required(const ResolvedJob& job, DiagnosticSink& sink) {
  for (const FieldSpec& field : config_fields()) {
    if (!field.required) continue;
    const nlohmann::json value = field.read(job.config);
    const bool missing = value.is_null() || (value.is_string() && value.get<std::string>().empty());
    if (!missing) continue;
    std::string hint = "add " + field.path + ": \"...\" to the job";
    if (!field.env.empty()) hint += ", or set " + field.env;
    sink.error(ErrorCode::kMissingField, job.location,
               "job '" + job.config.job_name + "' is missing the required key '" + field.path + "'", hint);
  }
}

// feedback.export(...) and other data-source calls become files through the installed resolver;
// without one they stay calls, and validation reports RLHF020.
void resolve_data_sources(ResolvedJob& job, DiagnosticSink& sink) {
  const DataSourceResolver& resolver = data_source_resolver();
  if (!resolver) return;
  for (DatasetSource* source : {&job.config.dataset, &job.config.eval_dataset}) {
    if (!source->call) continue;
    try {
      source->path = resolver(*source->call, job.config);
      source->call.reset();
    } catch (const RlhfError& error) {
      sink.error(error.code(), source->call->location, error.message());
    }
  }
}

}  // namespace

ResolvedJobFile resolve_job_file(const DslDocument& document, const ConfigOverrides& overrides,
                                 const ValidationContext& context) {
  DiagnosticSink sink;
  ResolvedJobFile result;
  for (const Diagnostic& warning : document.warnings) sink.warning(warning.location, warning.message, warning.hint);
  if (document.jobs.empty()) {
    SourceLocation location;
    location.file = document.file;
    sink.error(ErrorCode::kMissingField, location, "no `train rlhf \"Name\" { ... }` block in this file");
  }
  for (const DslJob& block : document.jobs) {
    if (result.find(block.name)) {
      sink.error(ErrorCode::kMissingField, block.location, "a second job is named \"" + block.name + "\"",
                 "job names must be unique within a file");
      continue;
    }
    ResolvedJob job;
    job.location = block.location;
    job.config.job_name = block.name;
    JobBuilder builder(sink, job);
    builder.apply_block(block.body, "");
    if (overrides.use_environment) builder.apply_environment();
    for (const std::string& assignment : overrides.assignments) builder.apply_assignment(assignment);
    derive_defaults(job);
    check_required(job, sink);
    if (!sink.has_errors()) resolve_data_sources(job, sink);
    validate_config(job, context, sink);
    result.jobs.push_back(std::move(job));
  }
  sink.throw_if_errors();
  result.warnings = sink.warnings();
  return result;
}

ResolvedJobFile load_job_file(const std::string& path, const ConfigOverrides& overrides,
                              const ValidationContext& context) {
  return resolve_job_file(parse_job_file(path), overrides, context);
}

nlohmann::json resolved_jobs_to_json(const ResolvedJobFile& file) {
  nlohmann::json jobs = nlohmann::json::array();
  for (const ResolvedJob& job : file.jobs) jobs.push_back(config_to_json(job.config));
  return nlohmann::json{{"jobs", jobs}};
}

}  // namespace n3rlhf
