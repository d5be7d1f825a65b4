// reference_log_probs.cpp: computing, storing and attaching precomputed reference log-probs
// (see reference_log_probs.hpp).
#include "runtime/reference_log_probs.hpp"

#include <algorithm>
#include <filesystem>

#include "core/error.hpp"
#include "core/sha256.hpp"

namespace n3rlhf {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kColumns = {"chosen", "rejected"};

}  // namespace

ReferenceCacheIdentity reference_cache_identity(const std::string& reference_directory, torch::ScalarType dtype,
                                                const torch::Device& device) {
  // Hashing the weights costs a few seconds per GB, once per run that uses the option; a path
  // alone would silently reuse numbers of a checkpoint that was overwritten in place.
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(reference_directory)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json" || entry.path().extension() == ".safetensors") files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  nlohmann::json hashes = nlohmann::json::object();
  for (const std::string& name : files) hashes[name] = sha256_file_hex(reference_directory + "/" + name);
  ReferenceCacheIdentity identity;
  identity.reference_model = fs::weakly_canonical(reference_directory).string() + " " + sha256_hex(hashes.dump());
  identity.settings = {{"dtype", std::string(c10::toString(dtype))}, {"device", device.is_cuda() ? "cuda" : "cpu"}};
  return identity;
}

std::shared_ptr<const ReferenceCache> ensure_reference_cache(const PreparedDataset& dataset, const std::string& prepared_dir,
                                                             const std::function<const ReferenceModel&()>& load_reference,
                                                             const ReferenceCacheIdentity& identity,
                                                             const CollateOptions& collate, int64_t batch_rows,
                                                             Communicator& communicator, const torch::Device& device) {
  if (dataset.sequences_per_example() != 2) {
    throw ConfigurationError(ErrorCode::kInvalidAlgorithm,
                             "precompute_ref_log_probs needs preference pairs (prompt/chosen/rejected); " + prepared_dir +
                                 " holds another kind of data",
                             {{"prepared", prepared_dir}});
  }
  const std::string fingerprint = dataset.fingerprint();
  // Rank 0 decides, so that no rank computes while another reads a cache a third is replacing.
  torch::Tensor found = torch::tensor({communicator.rank() == 0 && ReferenceCache::available(prepared_dir, fingerprint, identity) ? 1.0f : 0.0f});
  if (communicator.size() > 1) communicator.broadcast(found)->wait();
  if (found.item<float>() == 0.0f) {
    std::vector<int64_t> every_example(static_cast<size_t>(dataset.example_count()));
    for (int64_t i = 0; i < dataset.example_count(); ++i) every_example[static_cast<size_t>(i)] = i;
    BatchingOptions batching;
    batching.world_size = communicator.size();
    batching.global_batch_size = std::max<int64_t>(1, batch_rows) * communicator.size();
    batching.shuffle = false;
    batching.drop_last = false;  // every example once, the last global batch short
    RankBatchLoader loader(dataset, every_example, batching, collate, communicator.rank());
    ReferenceCacheWriter writer(prepared_dir, kColumns, dataset.example_count(), communicator.rank(), communicator.size());
    {
      const ReferenceModel& reference = load_reference();
      for (int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
        for (const CollatedBatch& micro : loader.load_step(0, step)) {
          if (micro.rows == 0) continue;
          const torch::Tensor logps = reference.sequence_log_probs(to_tensors(micro, device)).to(torch::kCPU);
          const int64_t pairs = static_cast<int64_t>(micro.example_indices.size());
          for (int64_t i = 0; i < pairs; ++i) {
            const int64_t example = micro.example_indices[static_cast<size_t>(i)];
            writer.put("chosen", example, logps[i].item<float>());
            writer.put("rejected", example, logps[pairs + i].item<float>());
          }
        }
      }
    }
    writer.finish();
    communicator.barrier()->wait();
    if (communicator.rank() == 0) {
      finalize_reference_cache(prepared_dir, fingerprint, identity, kColumns, dataset.example_count(), communicator.size());
    }
    communicator.barrier()->wait();
  }
  return std::make_shared<const ReferenceCache>(ReferenceCache::open(prepared_dir, fingerprint, identity));
}

void attach_reference_logps(BatchTensors& tensors, const CollatedBatch& batch, const ReferenceCache& cache) {
  std::vector<float> values = cache.gather("chosen", batch.example_indices);
  const std::vector<float> rejected = cache.gather("rejected", batch.example_indices);
  values.insert(values.end(), rejected.begin(), rejected.end());
  tensors.reference_logps = torch::tensor(values, torch::kFloat32).to(tensors.input_ids.device());
}

}  // namespace n3rlhf
