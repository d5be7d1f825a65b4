// error_catalog.cpp: the documented meaning and fix of every RLHF code.
#include "core/error_catalog.hpp"

#include <sstream>

namespace n3rlhf {

const std::vector<ErrorInfo>& error_catalog() {
  static const std::vector<ErrorInfo> catalog = {
      {ErrorCode::kMissingField, "Invalid job file or missing required field",
       "The job file could not be read or parsed, has an unknown key, or lacks a required key "
       "(base_model, dataset). The message points at the file, line and column.",
       "Fix the text at the caret. For unknown keys follow the 'did you mean' hint; "
       "`n3rlhf validate job.n3` lists every problem at once."},
      {ErrorCode::kInvalidAlgorithm, "Invalid algorithm selection",
       "algorithm names something n3rlhf does not train (or not in this build: the online algorithms' training loop), "
       "an adapter/method name is not supported, or a rewards term names no reward function.",
       "Use one of sft, reward_model, ppo, dpo, ipo, simpo, orpo, kto, grpo, rloo, reinforce_pp, reinforce_pp_baseline "
       "(peft.method: none, lora, qlora, ia3, adalora, dora; reward functions: docs/configuration.md)."},
      {ErrorCode::kInvalidHyperparameter, "Invalid hyperparameter value",
       "A value has the wrong type (a string where a number is needed) or lies outside its documented range.",
       "See docs/configuration.md for each field's type and range; the message names the range."},
      {ErrorCode::kIncompatibleOptions, "Incompatible configuration options",
       "Options that cannot go together: bf16 with fp16, PPO without a reward, QLoRA bits other than 4 or 8, "
       "a role layout that does not add up to the world size, a batch that does not split over the ranks.",
       "Change one of the two options named in the message; the hint says which is usual."},
      {ErrorCode::kMissingEnvironmentVariable, "Missing environment variable",
       "The job needs a setting from the environment that is not there (MLFLOW_TRACKING_URI for the mlflow "
       "tracker, HF_TOKEN for push_to_hub), or a program it runs lacks what it needs (the wandb tracker's "
       "Python without the wandb package).",
       "Export the variable named in the message, or give the value in the job file; for the wandb tracker, "
       "pip install wandb into the Python that N3RLHF_PYTHON names (default: python3 on PATH)."},
      {ErrorCode::kTrainingDivergence, "Training divergence",
       "The loss or the gradient norm became NaN or infinite, or exploded past the configured limit.",
       "Lower the learning rate, enable clipping (max_grad_norm), check the data; resume from the last good "
       "checkpoint named in the message."},
      {ErrorCode::kOutOfMemory, "Out of memory",
       "A rank could not allocate memory for activations, parameters or optimizer state.",
       "Lower micro_batch_size or max_length, use zero2/fsdp over more ranks, or train adapters (lora/qlora)."},
      {ErrorCode::kCheckpointSaveFailure, "Checkpoint save failure",
       "A checkpoint could not be written completely; the previous checkpoint is kept.",
       "Check free disk space and permissions of output.dir."},
      {ErrorCode::kModelLoadFailure, "Model loading failure",
       "A checkpoint file is unreadable or malformed: a truncated safetensors file, offsets past its end, "
       "overlapping tensors, an unknown dtype, or shapes that do not match the data.",
       "Re-download or re-export the checkpoint; the message names the file and tensor."},
      {ErrorCode::kDistributedSyncFailure, "Distributed synchronization failure",
       "A collective did not complete within distributed.collective_timeout_s, or a rank failed; the message "
       "names the operation, the group and the ranks that did not arrive.",
       "Look at the log of the ranks named; raise the timeout only if they are merely slow."},
      {ErrorCode::kEarlyStopping, "Early stopping triggered",
       "Training stopped early because the job's early_stopping rule fired: its evaluation metric did not improve by more than "
       "min_delta for `patience` evaluations. An orderly stop (exit status 0): the message names the best checkpoint, whose "
       "weights are the final model.",
       "Nothing to fix if intended; otherwise raise early_stopping.patience or lower early_stopping.min_delta."},
      {ErrorCode::kDatasetNotFound, "Dataset not found",
       "The dataset path does not exist, or the data source (such as feedback.export(...)) is not available.",
       "Check the path (relative paths are relative to the working directory) or export the data to JSONL."},
      {ErrorCode::kInvalidDatasetFormat, "Invalid dataset format",
       "A line of the data file is not valid JSON, or a column has the wrong type.",
       "Fix the line named in the message; each JSONL line must be one JSON object."},
      {ErrorCode::kMissingColumns, "Missing required columns",
       "A row lacks a column the algorithm needs (prompt/chosen/rejected for preference data, "
       "prompt/completion/label for KTO, text or prompt/completion for SFT).",
       "Rename the columns, or map them with data.prompt_key, data.chosen_key, ... in the job."},
      {ErrorCode::kInsufficientData, "Insufficient data",
       "Fewer usable rows than one global batch (or than the minimum the job asks for).",
       "Add data, lower hyperparameters.batch_size, or check how many rows were skipped as bad."},
      {ErrorCode::kDataCorruption, "Data corruption detected",
       "A prepared data shard does not match its manifest (checksum, tokenizer hash or source hash).",
       "Run `n3rlhf prepare` again; do not edit prepared shards by hand."},
      {ErrorCode::kPreferenceLabelMismatch, "Preference label mismatch",
       "Labels are inconsistent: a KTO label that is not boolean, chosen equal to rejected when the job "
       "rejects such rows, or pairs whose preference cannot be read.",
       "Fix the rows named in the message, or set data.on_bad_rows: \"skip\" to count and skip them."},
      {ErrorCode::kModelNotFound, "Model not found",
       "The model directory or one of its files (config.json, safetensors) does not exist, or a model named by Hub id "
       "(org/name) is not in the local Hugging Face cache (n3rlhf reads it offline).",
       "Check base_model/reward_model paths; for a Hub id, download it first with the command in the message "
       "(huggingface-cli download org/name), into the cache HF_HOME / HF_HUB_CACHE name."},
      {ErrorCode::kIncompatibleArchitecture, "Incompatible model architecture",
       "config.json names an architecture or an option n3rlhf cannot honour exactly (the field is named); "
       "or an adapter does not match its base model.",
       "Use a supported model_type (llama, mistral, qwen2, gpt2) or remove the unsupported option."},
      {ErrorCode::kModelLoadTimeout, "Model loading timeout",
       "Loading a model took longer than distributed.model_load_timeout_s on a rank (a slow or hung file system); every "
       "rank reports it and the job ends.",
       "Copy the checkpoint to local disk, or raise distributed.model_load_timeout_s (0: no limit)."},
      {ErrorCode::kTokenizerMismatch, "Tokenizer mismatch",
       "The tokenizer's vocabulary does not fit the model's embedding, or prepared data was made with "
       "another tokenizer.",
       "Use the tokenizer saved with the model, or re-run `n3rlhf prepare`."},
      {ErrorCode::kMemoryExceeded, "Memory exceeded",
       "The model does not fit in the memory available to a rank; the message gives the numbers.",
       "Use more ranks with fsdp, adapters (qlora), or a smaller model or batch."},
      {ErrorCode::kRewardModelFailure, "Reward model prediction failure",
       "The reward model produced no usable score (wrong head shape, NaN scores), or a reward term of a sample is not "
       "finite (the message names the sample and the term).",
       "Check that the reward model is a sequence-classification checkpoint with one label."},
      {ErrorCode::kEvaluationDatasetUnavailable, "Evaluation dataset unavailable",
       "The evaluation split is empty or its file cannot be read.",
       "Give eval_dataset, or raise data.eval_fraction."},
      {ErrorCode::kMetricComputationFailure, "Metric computation failure",
       "A metric could not be computed (empty batch, NaN), or a metric sink failed to write.",
       "See the cause in the message; sinks that fail are reported, training continues when it can."},
      {ErrorCode::kSafetyFilterFailure, "Safety filter failure",
       "The safety classifier could not be loaded or run.",
       "Check safety.safety_model, or disable the safety filter."},
      {ErrorCode::kBenchmarkNotFound, "Benchmark not found",
       "An evaluation benchmark named in the job does not exist.",
       "Use a benchmark name that is listed in docs/."},
      {ErrorCode::kUploadFailure, "Upload failure",
       "Uploading or downloading an artifact (to or from an object store, the Hub or a tracker) failed after its retries; "
       "the message names the URI and the server's reason.",
       "Check credentials (AWS_* / GCS_* variables), the endpoint and connectivity; the local copy in output.dir is kept."},
      {ErrorCode::kDirectoryNotWritable, "Directory not writable",
       "output.dir (or a log directory) cannot be created or written.",
       "Choose a writable output.dir or fix its permissions."},
      {ErrorCode::kModelRegistryUnavailable, "Model registry unavailable",
       "The model registry named in output.model_registry cannot be reached.",
       "Check the registry URI, or use a local directory."},
      {ErrorCode::kArtifactCorruption, "Artifact corruption",
       "A checkpoint or artifact failed its checksum when loaded, or is incomplete.",
       "n3rlhf skips it and resumes from the newest valid checkpoint; delete the corrupt one."},
      {ErrorCode::kStoreUnavailable, "Feedback store unavailable",
       "The feedback and jobs database (SQLite file or PostgreSQL server) cannot be opened, migrated, read or written.",
       "Check the store URL (N3RLHF_FEEDBACK_STORE, `n3rlhf serve --store`), that the server is up and the file writable; the message names the database's own error."},
  };
  return catalog;
}

const ErrorInfo& error_info(ErrorCode code) {
  for (const ErrorInfo& info : error_catalog()) {
    if (info.code == code) return info;
  }
  return error_catalog().front();
}

std::string explain_error(ErrorCode code) {
  const ErrorInfo& info = error_info(code);
  std::ostringstream out;
  out << error_code_string(code) << ": " << info.title << " (" << error_category_name(error_category(code))
      << " error)\n\n"
      << info.meaning << "\n\nLikely fix: " << info.fix << "\n";
  return out.str();
}

std::string error_catalog_markdown() {
  std::ostringstream out;
  out << "# Error codes\n\n"
      << "Every failure n3rlhf reports carries a code `RLHFnnn`. Job-file errors print as\n"
      << "`file:line:col: error[RLHFnnn]: message` with the line, a caret and a hint; run-time errors print\n"
      << "`[RLHFnnn] message (context)` followed by their causes. `n3rlhf explain RLHFnnn` prints the entry\n"
      << "below. This file is generated by `n3rlhf explain --markdown` (a test checks that it is current).\n";
  ErrorCategory category = ErrorCategory::kStorage;
  bool first = true;
  for (const ErrorInfo& info : error_catalog()) {
    if (first || error_category(info.code) != category) {
      category = error_category(info.code);
      std::string name(error_category_name(category));
      name[0] = static_cast<char>(name[0] - 'a' + 'A');
      out << "\n## " << name << "\n";
      first = false;
    }
    out << "\n### " << error_code_string(info.code) << ": " << info.title << "\n\n"
        << info.meaning << "\n\n**Likely fix:** " << info.fix << "\n";
  }
  return out.str();
}

}  // namespace n3rlhf
