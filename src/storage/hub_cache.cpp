// hub_cache.cpp: Hub ids to snapshot directories of the local Hugging Face cache.
#include "storage/hub_cache.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "storage/object_uri.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

bool hub_name_part(std::string_view part) {
  if (part.empty() || part.size() > 96 || part.front() == '.' || part.front() == '-') return false;
  for (char c : part) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return part.find("..") == std::string_view::npos;
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

bool is_commit_hash(const std::string& text) {
  return text.size() == 40 && std::all_of(text.begin(), text.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

}  // namespace

std::optional<HubModelId> parse_hub_model_id(std::string_view text) {
  if (text.empty() || is_object_uri(text)) return std::nullopt;
  HubModelId id;
  std::string_view name = text;
  if (const size_t at = text.find('@'); at != std::string_view::npos) {
    id.revision = std::string(text.substr(at + 1));
    name = text.substr(0, at);
    if (id.revision.empty() || id.revision.find("..") != std::string::npos || id.revision.front() == '/') return std::nullopt;
  } else {
    id.revision = "main";
  }
  const size_t slash = name.find('/');
  if (slash == std::string_view::npos || name.find('/', slash + 1) != std::string_view::npos) return std::nullopt;
  if (!hub_name_part(name.substr(0, slash)) || !hub_name_part(name.substr(slash + 1))) return std::nullopt;
  id.repo_id = std::string(name);
  return id;
}

std::string hub_cache_directory() {
  if (std::string cache = environment("HF_HUB_CACHE"); !cache.empty()) return cache;
  if (std::string home = environment("HF_HOME"); !home.empty()) return (fs::path(home) / "hub").string();
  if (std::string xdg = environment("XDG_CACHE_HOME"); !xdg.empty()) return (fs::path(xdg) / "huggingface" / "hub").string();
  return (fs::path(environment("HOME")) / ".cache" / "huggingface" / "hub").string();
}

std::string resolve_model_path(const std::string& name_or_path) {
  std::error_code error;
  if (fs::exists(name_or_path, error)) return name_or_path;
  const std::optional<HubModelId> id = parse_hub_model_id(name_or_path);
  if (!id) {
    throw ModelError(ErrorCode::kModelNotFound, "no model at " + name_or_path + " (neither a local path nor a Hub id org/name)",
                     {{"path", name_or_path}});
  }
  const std::string cache = hub_cache_directory();
  std::string folder = "models--" + id->repo_id;
  folder.replace(folder.find('/'), 1, "--");
  const fs::path repository = fs::path(cache) / folder;
  std::string commit;
  std::string why;
  if (!fs::is_directory(repository, error)) {
    why = repository.string() + " does not exist";
  } else if (const fs::path ref = repository / "refs" / id->revision; fs::is_regular_file(ref, error)) {
    std::ifstream in(ref);
    std::getline(in, commit);
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
    if (commit.empty()) why = ref.string() + " is empty";
  } else if (is_commit_hash(id->revision)) {
    commit = id->revision;
  } else {
    why = "the cache has no ref \"" + id->revision + "\" (" + ref.string() + ")";
  }
  if (!commit.empty()) {
    const fs::path snapshot = repository / "snapshots" / commit;
    if (fs::is_directory(snapshot, error)) return snapshot.string();
    why = "the snapshot " + snapshot.string() + " does not exist";
  }
  const std::string command = "huggingface-cli download " + id->repo_id + (id->revision == "main" ? "" : " --revision " + id->revision);
  throw ModelError(ErrorCode::kModelNotFound,
                   "the model \"" + name_or_path + "\" is not a local path and not in the Hugging Face cache " + cache + " (" +
                       why + "); n3rlhf reads the cache offline: download it first with `" + command + "`" +
                       " (HF_HOME or HF_HUB_CACHE choose the cache)",
                   {{"model", name_or_path}, {"cache", cache}, {"command", command}});
}

void resolve_model_paths(RLHFConfig& config) {
  for (std::string* model : {&config.base_model, &config.tokenizer, &config.reference_model, &config.reward_model}) {
    if (!model->empty()) *model = resolve_model_path(*model);
  }
}

}  // namespace n3rlhf
