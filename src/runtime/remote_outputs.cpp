// remote_outputs.cpp: the run's checkpoint mirror, remote data sets and final uploads.
#include "runtime/remote_outputs.hpp"

#include <cstdlib>

#include "core/log.hpp"
#include "io/mlflow_registry.hpp"
#include "runtime/hub_upload.hpp"
#include "io/remote_dataset.hpp"

namespace n3rlhf {

void check_remote_settings(const RLHFConfig& config) {
  for (const std::string* uri : {&config.dataset.path, &config.eval_dataset.path, &config.output.remote_dir, &config.output.model_registry}) {
    if (is_object_uri(*uri)) object_store_options_from_environment(parse_object_uri(*uri).scheme);
  }
}

std::optional<CheckpointMirror> checkpoint_mirror_for(const RLHFConfig& config) {
  if (config.output.remote_dir.empty()) return std::nullopt;
  const ObjectUri remote = parse_object_uri(config.output.remote_dir);
  return CheckpointMirror(ObjectStore::for_uri(remote), remote.child("checkpoints"), config.output.keep_last_checkpoints);
}

std::string local_dataset_path(const std::string& path, bool fetch) {
  if (!is_object_uri(path)) return path;
  return fetch ? fetch_remote_dataset(path) : remote_data_local_path(path);
}

void upload_final_outputs(const RLHFConfig& config, const std::map<std::string, double>& metrics) {
  std::vector<std::string> targets;
  if (!config.output.remote_dir.empty()) targets.push_back(config.output.remote_dir);
  if (is_object_uri(config.output.model_registry) && config.output.model_registry != config.output.remote_dir) {
    targets.push_back(config.output.model_registry);
  }
  for (const std::string& target : targets) {
    const ObjectUri remote = parse_object_uri(target);
    const size_t files = upload_directory(ObjectStore::for_uri(remote), config.output.dir, remote, {"checkpoints"}, "config.json");
    spdlog::info("output: {} files of {} uploaded to {}", files, config.output.dir, remote.str());
  }
  if (config.output.push_to_hub) push_to_hub({config.output.dir, config.output.hub_model_id, ""});
  const std::string model_name = mlflow_registered_model_name(config.output.model_registry);
  if (!model_name.empty()) {
    MlflowRegistration registration;
    registration.tracking_uri = mlflow_tracking_uri(config);
    registration.experiment_name = config.logging.project.empty() ? "n3rlhf" : config.logging.project;
    registration.run_name = (config.logging.run_name.empty() ? config.job_name : config.logging.run_name) + " (registered model)";
    registration.model_name = model_name;
    register_mlflow_model(registration, config.output.dir, metrics);
  }
}

std::string mlflow_tracking_uri(const RLHFConfig& config) {
  if (!config.logging.tracking_uri.empty()) return config.logging.tracking_uri;
  const char* from_environment = std::getenv("MLFLOW_TRACKING_URI");
  return from_environment == nullptr ? std::string() : std::string(from_environment);
}

}  // namespace n3rlhf
