// mlflow_registry.hpp: output.model_registry "mlflow:/NAME": the final model registered in an
// MLflow model registry as a new version of NAME, over the tracking server's REST API: a run
// of its own in the job's experiment holding the output directory as artifacts under "model/"
// (uploaded through the server's artifact proxy) and the run's final metrics, then
// registered-models/create (once) and model-versions/create with that run as the source.
#pragma once

#include <map>
#include <string>

namespace n3rlhf {

struct MlflowRegistration {
  std::string tracking_uri;     // http(s)://host:port[/prefix]
  std::string experiment_name = "n3rlhf";
  std::string run_name;
  std::string model_name;       // NAME of "mlflow:/NAME"
  double timeout_s = 60.0;      // per request (artifact uploads included)
};

struct RegisteredModelVersion {
  std::string model_name;
  std::string version;
  std::string run_id;
  std::string source;  // the run's artifact URI of the model
};

// "NAME" of "mlflow:/NAME" (or "mlflow://NAME"); "" when `registry` is not an MLflow registry.
std::string mlflow_registered_model_name(const std::string& registry);

// Uploads every regular file under `directory` (skipping the top-level "checkpoints") and
// registers it. StorageError RLHF052 naming the server and the request when the server cannot be
// reached, refuses, or does not proxy artifacts (mlflow server --serve-artifacts).
RegisteredModelVersion register_mlflow_model(const MlflowRegistration& registration, const std::string& directory,
                                             const std::map<std::string, double>& metrics);

}  // namespace n3rlhf
