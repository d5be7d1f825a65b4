// job_submission.cpp: the job request body's reader and the N3 rendering of the seed's fields.
#include "service/job_submission.hpp"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

#include "service/refusal.hpp"

namespace n3rlhf::service {

namespace {

std::string n3_string(const std::string& text) {
  std::string out = "\"";
  for (const unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof(escape), "\\u%04x", c);
          out += escape;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

bool n3_key(const std::string& key) {
  if (key.empty() || key.size() > 64 || !(std::isalpha(static_cast<unsigned char>(key[0])) || key[0] == '_')) return false;
  for (const char c : key) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// As deep as the N3 parser reads (its kMaxNesting); deeper bodies are refused, not recursed into.
constexpr size_t kMaxConfigNesting = 64;

void render_value(const nlohmann::json& value, const std::string& indent, size_t depth, std::string& out) {
  if (depth > kMaxConfigNesting) {
    throw Refusal(400, "config is nested more than " + std::to_string(kMaxConfigNesting) + " levels deep",
                  {{"field", "config"}});
  }
  switch (value.type()) {
    case nlohmann::json::value_t::object:
      out += "{\n";
      for (const auto& [key, item] : value.items()) {
        if (!n3_key(key)) throw Refusal(400, "config key '" + key + "' is not a name (letters, digits, _)");
        out += indent + "  " + key + ": ";
        render_value(item, indent + "  ", depth + 1, out);
        out += "\n";
      }
      out += indent + "}";
      break;
    case nlohmann::json::value_t::array: {
      out += "[";
      bool first = true;
      for (const auto& item : value) {
        if (!first) out += ", ";
        first = false;
        render_value(item, indent, depth + 1, out);
      }
      out += "]";
      break;
    }
    case nlohmann::json::value_t::string: out += n3_string(value.get<std::string>()); break;
    case nlohmann::json::value_t::boolean: out += value.get<bool>() ? "true" : "false"; break;
    case nlohmann::json::value_t::null: out += "null"; break;
    case nlohmann::json::value_t::number_float: {
      const double number = value.get<double>();
      if (!std::isfinite(number)) throw Refusal(400, "config holds a number that is not finite");
      char text[40];
      std::snprintf(text, sizeof(text), "%.17g", number);
      std::string rendered = text;
      if (rendered.find_first_of(".eE") == std::string::npos) rendered += ".0";
      out += rendered;
      break;
    }
    default: out += value.dump(); break;
  }
}

}  // namespace

std::string render_job_text(const nlohmann::json& fields) {
  const auto text_field = [&](const char* name, bool required) -> std::string {
    if (!fields.contains(name) || fields[name].is_null()) {
      if (required) throw Refusal(400, std::string("the job needs ") + name + " (or job_text)", {{"field", name}});
      return "";
    }
    if (!fields[name].is_string()) throw Refusal(400, std::string(name) + " must be a string", {{"field", name}});
    return fields[name].get<std::string>();
  };
  const std::string name = text_field("job_name", true);
  std::string out = "train rlhf " + n3_string(name) + " {\n";
  const std::string algorithm = text_field("algorithm", true);
  out += "  algorithm: " + n3_string(algorithm) + "\n";
  const std::string base_model = text_field("base_model", false);
  if (!base_model.empty()) out += "  base_model: " + n3_string(base_model) + "\n";
  const std::string dataset = text_field("dataset_path", false);
  if (!dataset.empty()) out += "  dataset: " + n3_string(dataset) + "\n";
  if (fields.contains("config") && !fields["config"].is_null()) {
    const nlohmann::json& config = fields["config"];
    if (!config.is_object()) throw Refusal(400, "config must be an object", {{"field", "config"}});
    for (const auto& [key, value] : config.items()) {
      if (!n3_key(key)) throw Refusal(400, "config key '" + key + "' is not a name (letters, digits, _)");
      out += "  " + key + ": ";
      render_value(value, "  ", 1, out);
      out += "\n";
    }
  }
  return out + "}\n";
}

JobSubmission parse_job_submission(const nlohmann::json& body, size_t max_job_text_bytes, size_t max_id_bytes) {
  if (!body.is_object()) throw Refusal(400, "the body must be a JSON object");
  static const std::set<std::string> known = {"job_text", "job_name", "algorithm", "base_model", "dataset_path",
                                              "config", "launcher", "ranks", "overrides"};
  for (const auto& [key, value] : body.items()) {
    if (!known.count(key)) throw Refusal(400, "unknown field '" + key + "'", {{"field", key}});
  }
  JobSubmission submission;
  if (body.contains("job_text")) {
    if (!body["job_text"].is_string()) throw Refusal(400, "job_text must be a string", {{"field", "job_text"}});
    for (const char* field : {"job_name", "algorithm", "base_model", "dataset_path", "config"}) {
      if (body.contains(field)) {
        throw Refusal(400, std::string("give either job_text or the job's fields, not both (") + field + ")",
                      {{"field", field}});
      }
    }
    submission.job_text = body["job_text"].get<std::string>();
  } else {
    if (body.contains("job_name") && body["job_name"].is_string() &&
        body["job_name"].get<std::string>().size() > max_id_bytes) {
      throw Refusal(400, "job_name is longer than " + std::to_string(max_id_bytes) + " bytes", {{"field", "job_name"}});
    }
    submission.job_text = render_job_text(body);
  }
  if (submission.job_text.find('\0') != std::string::npos) {
    throw Refusal(400, "the job text holds a NUL character", {{"field", "job_text"}});
  }
  if (submission.job_text.size() > max_job_text_bytes) {
    throw Refusal(413, "the job text is longer than " + std::to_string(max_job_text_bytes) + " bytes",
                  {{"field", "job_text"}});
  }
  if (body.contains("launcher")) {
    if (!body["launcher"].is_string() ||
        (body["launcher"] != "local" && body["launcher"] != "kubernetes")) {
      throw Refusal(400, "launcher must be \"local\" or \"kubernetes\"", {{"field", "launcher"}});
    }
    submission.launcher = body["launcher"].get<std::string>();
  }
  if (body.contains("ranks")) {
    if (!body["ranks"].is_number_integer() || body["ranks"].get<int64_t>() < 1) {
      throw Refusal(400, "ranks must be a positive integer", {{"field", "ranks"}});
    }
    submission.ranks = body["ranks"].get<int64_t>();
  }
  if (body.contains("overrides")) {
    if (!body["overrides"].is_array()) throw Refusal(400, "overrides must be a list of \"key=value\"", {{"field", "overrides"}});
    for (const auto& item : body["overrides"]) {
      if (!item.is_string() || item.get<std::string>().find('=') == std::string::npos ||
          item.get<std::string>().find('\0') != std::string::npos ||
          item.get<std::string>().size() > 4096) {
        throw Refusal(400, "each override is a \"key.path=value\" string", {{"field", "overrides"}});
      }
      submission.overrides.push_back(item.get<std::string>());
    }
    if (submission.overrides.size() > 64) throw Refusal(400, "at most 64 overrides", {{"field", "overrides"}});
  }
  return submission;
}

}  // namespace n3rlhf::service
