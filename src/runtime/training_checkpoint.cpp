// training_checkpoint.cpp: the checkpoint's files: shard-R-of-W.safetensors (each rank's engine
// state, written one tensor at a time; critic-shard-R-of-W.safetensors for a separate critic),
// rng/rank-R.safetensors, adalora_allocator.safetensors and trainer_state.json (step, skipped
// steps, world size, the engines' layouts, the job, the online loop's state).
#include "runtime/training_checkpoint.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <system_error>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <nlohmann/json.hpp>

#include "core/config_schema.hpp"
#include "core/fault_injection.hpp"
#include "core/input_file.hpp"
#include "core/log.hpp"
#include "model/safetensors.hpp"
#include "runtime/remote_outputs.hpp"
#include "shard/shard_checkpoint.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

// AdaLoRA's importance EMAs and rank pattern (AdaLoraAllocator::state_tensors), in every
// checkpoint of a run whose budget schedule runs: replicated on every rank, so rank 0 writes it.
constexpr const char* kAdaLoraStateFile = "adalora_allocator.safetensors";

// Each rank's random state, in every checkpoint: torch's default CPU generator ("cpu") and, on a
// GPU, the device's ("cuda"), as the next step finds them (saved after the step and its eval), so
// that dropout (peft.dropout, any draw from torch's default generators) draws the uninterrupted
// run's masks after --resume.
std::string random_state_file(int rank) { return "rng/rank-" + std::to_string(rank) + ".safetensors"; }

// defaultGenerator(device) rather than at::cuda's getter: no CUDA header, so the CPU-only build
// compiles this too; the CUDA generator is only asked for when the run is on a GPU.
std::vector<std::pair<std::string, torch::Tensor>> random_state_tensors(const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {{"cpu", at::detail::getDefaultCPUGenerator().get_state()}};
  if (device.is_cuda()) tensors.emplace_back("cuda", at::globalContext().defaultGenerator(device).get_state());
  return tensors;
}

void restore_random_state(const CheckpointInfo& info, int saved_world, int rank, int world, const torch::Device& device) {
  const std::string relative = random_state_file(rank);
  if (!info.manifest.lists(relative)) {
    // Not an error: a run without dropout draws nothing, and resumes bitwise all the same.
    if (rank == 0) {
      spdlog::warn("{} holds no random state (written by an n3rlhf that did not save it): with dropout, the resumed "
                   "run's dropout masks differ from the uninterrupted run's",
                   info.directory);
    }
    return;
  }
  if (saved_world != world) {
    if (rank == 0) {
      spdlog::warn("{} was written by {} rank(s), this run has {}: the per-rank random streams cannot be restored, so "
                   "with dropout the resumed run's dropout masks differ from an uninterrupted run's",
                   info.directory, saved_world, world);
    }
    return;
  }
  const auto file = SafetensorsFile::open(info.directory + "/" + relative);
  const auto restore = [&](const std::string& name, const torch::Device& generator_device) {
    try {
      at::Generator generator = generator_device.is_cpu() ? at::detail::getDefaultCPUGenerator()
                                                          : at::globalContext().defaultGenerator(generator_device);
      generator.set_state(file->load(name));
    } catch (const c10::Error& error) {
      throw StorageError(ErrorCode::kArtifactCorruption,
                         "the random state \"" + name + "\" in the checkpoint does not fit this build's generator: " +
                             error.what_without_backtrace(),
                         {{"checkpoint", info.directory}, {"file", relative}});
    }
  };
  if (file->find("cpu") == nullptr) {
    throw StorageError(ErrorCode::kArtifactCorruption, "the checkpoint's random state file has no \"cpu\" generator state",
                       {{"checkpoint", info.directory}, {"file", relative}});
  }
  restore("cpu", torch::Device(torch::kCPU));
  if (!device.is_cuda()) return;
  if (file->find("cuda") != nullptr) {
    restore("cuda", device);
  } else if (rank == 0) {
    spdlog::warn("{} was written by a run on the CPU: the GPU's random state is not in it, so with dropout the resumed "
                 "run's dropout masks differ from an uninterrupted run's",
                 info.directory);
  }
}

constexpr const char* kCriticShardPrefix = "critic-shard";

std::string shard_file(const std::string& prefix, int rank, int world) {
  return prefix + "-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".safetensors";
}

// Written one tensor at a time: the moments are assembled per unit as the writer reaches them.
void write_engine_shard(ShardingEngine& engine, const std::string& path) {
  std::vector<DeferredTensor> tensors;
  for (DeferredShardTensor& entry : deferred_shard_state(engine)) {
    tensors.push_back({entry.name, torch::kFloat32, entry.shape, std::move(entry.make)});
  }
  save_safetensors(path, tensors);
}

// The ranges of the engine's state this rank owns, read from the shards of any saved world size.
void read_engine_shards(ShardingEngine& engine, const nlohmann::json& layout, const std::string& directory, const std::string& prefix,
                        int saved_world) {
  std::map<int, std::shared_ptr<SafetensorsFile>> files;
  load_shard_state(engine, layout, saved_world, [&](int rank, const std::string& name) {
    auto& file = files[rank];
    if (!file) file = SafetensorsFile::open(directory + "/" + shard_file(prefix, rank, saved_world));
    return file->load(name);
  });
}

// Rank 0 uploads the committed checkpoint to output.remote_dir (manifest last). A failed upload
// is reported (RLHF050) and training goes on: the local checkpoint is complete, the remote one
// has no manifest and so is never taken for valid, and the next save uploads again.
void mirror_checkpoint(const CheckpointInfo& info, const RLHFConfig& config) {
  try {
    if (const std::optional<CheckpointMirror> mirror = checkpoint_mirror_for(config)) mirror->upload(info);
  } catch (const StorageError& error) {
    spdlog::error("{} (the local checkpoint {} is kept; the next save uploads again)", error.what(), info.directory);
  }
}

// --resume with no valid local checkpoint: rank 0 brings the newest valid one of
// output.remote_dir into the local directory; every rank learns whether that failed.
void fetch_remote_checkpoint(const CheckpointDirectory& checkpoints, const CheckpointParts& parts, Communicator& communicator) {
  if (parts.config.output.remote_dir.empty()) return;
  std::exception_ptr failure;
  if (communicator.rank() == 0 && !checkpoints.latest_valid()) {
    try {
      if (const std::optional<CheckpointMirror> mirror = checkpoint_mirror_for(parts.config)) {
        if (!mirror->fetch_latest(checkpoints)) spdlog::warn("--resume: no valid checkpoint under {} either", mirror->remote().str());
      }
    } catch (...) {
      failure = std::current_exception();
    }
  }
  torch::Tensor failed = torch::full({1}, failure ? 1.0f : 0.0f, torch::TensorOptions().dtype(torch::kFloat32).device(parts.device));
  if (communicator.size() > 1) communicator.all_reduce(failed)->wait();
  if (failure) std::rethrow_exception(failure);
  if (failed.item<float>() > 0) {
    throw StorageError(ErrorCode::kUploadFailure, "--resume: rank 0 could not fetch the remote checkpoint (its log says why)",
                       {{"remote_dir", parts.config.output.remote_dir}});
  }
}

}  // namespace

void save_training_checkpoint(const CheckpointDirectory& checkpoints, const TrainerState& trainer, const CheckpointParts& parts,
                              Communicator& communicator) {
  ShardingEngine& engine = parts.engine;
  const int64_t step = trainer.step;
  // Rank 0 opens the pending directory; every rank writes its shard into it (a shared file
  // system, as for any multi-node checkpoint); rank 0 commits after all have written.
  std::optional<PendingCheckpoint> pending;
  if (communicator.rank() == 0) pending.emplace(checkpoints.begin(step));
  communicator.barrier()->wait();
  const std::string directory = checkpoints.pending_directory(step);
  write_engine_shard(engine, directory + "/" + shard_file("shard", communicator.rank(), communicator.size()));
  if (parts.critic) {
    write_engine_shard(*parts.critic, directory + "/" + shard_file(kCriticShardPrefix, communicator.rank(), communicator.size()));
  }
  fault_point("checkpoint_write", communicator.rank(), step);
  // Every rank its own: the ranks' streams part as soon as their batches differ in shape.
  const std::string random_state = directory + "/" + random_state_file(communicator.rank());
  std::error_code created;
  fs::create_directories(fs::path(random_state).parent_path(), created);  // all ranks at once: EEXIST is fine
  save_safetensors(random_state, random_state_tensors(parts.device));
  communicator.barrier()->wait();
  if (pending) {
    nlohmann::json state = {{"step", step},
                            {"skipped_steps", trainer.skipped_steps},
                            {"world_size", communicator.size()},
                            {"layout", layout_json(engine)},
                            {"job", config_to_json(parts.config)}};
    if (parts.critic) state["critic_layout"] = layout_json(*parts.critic);
    if (!trainer.loop.empty()) state["loop"] = trainer.loop;
    if (parts.adalora) save_safetensors(pending->path(kAdaLoraStateFile), parts.adalora->state_tensors());
    pending->write_file("trainer_state.json", state.dump(2));
    pending->set_metadata({{"step", step}, {"world_size", communicator.size()}});
    const CheckpointInfo info = pending->commit();
    spdlog::info("checkpoint {} written to {}", step, info.directory);
    mirror_checkpoint(info, parts.config);
  }
  communicator.barrier()->wait();
}

TrainerState load_training_checkpoint(const CheckpointInfo& info, const CheckpointParts& parts, const Communicator& communicator) {
  ShardingEngine& engine = parts.engine;
  AdaLoraAllocator* adalora = parts.adalora;
  // Verified against the manifest's SHA-256 already; read bounded all the same.
  const nlohmann::json state = nlohmann::json::parse(read_input_file(info.directory + "/trainer_state.json", InputKind::kCheckpointState));
  const int saved_world = state.at("world_size").get<int>();
  read_engine_shards(engine, state.at("layout"), info.directory, "shard", saved_world);
  if (parts.critic) {
    if (!state.contains("critic_layout")) {
      throw StorageError(ErrorCode::kArtifactCorruption,
                         "the checkpoint has no critic (critic_layout in trainer_state.json), which this run's ppo.critic_model "
                         "needs: it was written by a run with the value head on the policy",
                         {{"checkpoint", info.directory}});
    }
    read_engine_shards(*parts.critic, state.at("critic_layout"), info.directory, kCriticShardPrefix, saved_world);
  }
  if (adalora) {
    // Verified with the rest (its SHA-256 is in the manifest); absent from a checkpoint of a run
    // without AdaLoRA's schedule, which cannot continue this one.
    if (!info.manifest.lists(kAdaLoraStateFile)) {
      throw StorageError(ErrorCode::kArtifactCorruption,
                         std::string("the checkpoint has no AdaLoRA allocator state (") + kAdaLoraStateFile +
                             "), which this AdaLoRA run needs to continue its rank schedule: it was written by a run "
                             "without that schedule, or by an n3rlhf that did not save it",
                         {{"checkpoint", info.directory}});
    }
    const auto file = SafetensorsFile::open(info.directory + "/" + kAdaLoraStateFile);
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const SafetensorsTensorInfo& tensor : file->tensors()) tensors.emplace_back(tensor.name, file->load(tensor.name));
    adalora->load_state_tensors(tensors);
  }
  restore_random_state(info, saved_world, communicator.rank(), communicator.size(), parts.device);
  TrainerState trainer;
  trainer.step = state.at("step").get<int64_t>();
  trainer.skipped_steps = state.value("skipped_steps", int64_t{0});
  if (state.contains("loop")) trainer.loop = state.at("loop").get<std::map<std::string, double>>();
  return trainer;
}

std::optional<TrainerState> resume_training(const CheckpointDirectory& checkpoints, const CheckpointParts& parts,
                                            Communicator& communicator) {
  fetch_remote_checkpoint(checkpoints, parts, communicator);
  std::vector<CorruptCheckpoint> skipped;
  const std::optional<CheckpointInfo> latest = checkpoints.latest_valid(&skipped);
  if (latest) {
    TrainerState state = load_training_checkpoint(*latest, parts, communicator);
    spdlog::info("resumed from {} at step {}{}", latest->directory, state.step,
                 skipped.empty() ? "" : fmt::format(" (passed over {} newer corrupt checkpoint(s))", skipped.size()));
    return state;
  }
  if (skipped.empty()) {
    spdlog::warn("--resume: no checkpoint in {} yet; starting from step 0", checkpoints.root());
    return std::nullopt;
  }
  std::string list;
  for (const CorruptCheckpoint& corrupt : skipped) list += "\n  " + corrupt.directory + ": " + corrupt.reason;
  throw StorageError(ErrorCode::kArtifactCorruption,
                     "--resume: no valid checkpoint in " + checkpoints.root() + "; every one failed verification:" + list +
                         "\nrun without --resume to start over from step 0 (new checkpoints then replace these)",
                     {{"checkpoints", checkpoints.root()}, {"skipped", std::to_string(skipped.size())}});
}

}  // namespace n3rlhf
