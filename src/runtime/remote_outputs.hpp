// remote_outputs.hpp: a run's object-store side: where its checkpoints are mirrored
// (output.remote_dir/checkpoints), remote data sets staged into the local cache, and the final
// output uploaded to output.remote_dir and to an object-store output.model_registry.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "core/config.hpp"
#include "io/checkpoint_mirror.hpp"

namespace n3rlhf {

// Every object-store URI of the job (dataset, eval_dataset, output.remote_dir, an object-store
// model_registry) parsed and its scheme's credentials read from the environment, so that a run
// with incomplete credentials stops before training (ConfigurationError RLHF003 / RLHF005).
void check_remote_settings(const RLHFConfig& config);

// The mirror of the run's checkpoints, when output.remote_dir is set (credentials from the
// environment: RLHF005 when they are incomplete).
std::optional<CheckpointMirror> checkpoint_mirror_for(const RLHFConfig& config);

// The local path a data source is read from: `path` itself, or for an s3:// / gs:// URI its copy
// in the local cache (remote_dataset.hpp). With `fetch` (rank 0) the copy is made or refreshed.
std::string local_dataset_path(const std::string& path, bool fetch);

// Rank 0, after the final model is saved: uploads output.dir (its model, tokenizer and logs; not
// its checkpoints, mirrored already) to output.remote_dir and to output.model_registry when that
// is an object-store URI (config.json last), pushes it to the Hub with push_to_hub
// (hub_upload.hpp), and registers it as a new version of the MLflow
// model of a "mlflow:/NAME" registry with `metrics` (the final loss, the last evaluation) on its
// run. No-op when none is set. RLHF050 (RLHF052 for the registry) on failure, the local output kept.
// logging.tracking_uri, else MLFLOW_TRACKING_URI ("" when neither is set).
std::string mlflow_tracking_uri(const RLHFConfig& config);

void upload_final_outputs(const RLHFConfig& config, const std::map<std::string, double>& metrics = {});

}  // namespace n3rlhf
