// adapter_files.cpp: adapter_config.json + adapter_model.safetensors as PEFT writes them
// (keys "base_model.model.<parameter name>"), loaded onto a base model with every tensor checked.
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "adapters/adapters.hpp"
#include "core/error.hpp"
#include "model/safetensors.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

constexpr const char* kPeftKeyPrefix = "base_model.model.";
constexpr const char* kAdapterWeightsFileName = "adapter_model.safetensors";

std::string shape_text(c10::IntArrayRef shape) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < shape.size(); ++i) text << (i ? ", " : "") << shape[i];
  text << "]";
  return text.str();
}

}  // namespace

AdapterSet load_adapter(CausalTransformer& model, const std::string& directory, const AttachOptions& options) {
  return load_adapter(model, directory, read_adapter_config(directory), options);
}

AdapterSet load_adapter(CausalTransformer& model, const std::string& directory, const AdapterConfig& config,
                        const AttachOptions& options, const std::vector<std::string>& modules_not_in_file) {
  const fs::path weights = fs::path(directory) / kAdapterWeightsFileName;
  if (!fs::exists(weights)) {
    const bool pickle = fs::exists(fs::path(directory) / "adapter_model.bin");
    throw ModelError(ErrorCode::kModelNotFound,
                     pickle ? "only adapter_model.safetensors is read; adapter_model.bin (pickle) is not"
                            : "no adapter_model.safetensors in the adapter directory",
                     {{"path", directory}});
  }
  AdapterSet adapters = attach_adapters(model, config, options);
  std::map<std::string, torch::Tensor> expected;
  for (auto& [name, tensor] : adapters.named_parameters()) expected.emplace(name, tensor);

  const auto file = SafetensorsFile::open(weights.string());
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const SafetensorsTensorInfo& info : file->tensors()) {
    const std::string prefix(kPeftKeyPrefix);
    const bool prefixed = info.name.rfind(prefix, 0) == 0;
    const auto found = prefixed ? expected.find(info.name.substr(prefix.size())) : expected.end();
    if (found == expected.end()) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture,
                       "adapter tensor has no matching adapted module in the base model", {{"tensor", info.name}, {"path", weights.string()}});
    }
    torch::Tensor& target = found->second;
    // A module to save of GPT-2's Conv1D kind is stored as [in, out], as transformers stores it.
    const SavedParameter* saved = adapters.modules_to_save().find(found->first);
    const bool transposed = saved != nullptr && saved->transposed_in_file;
    const std::vector<int64_t> file_shape = transposed ? std::vector<int64_t>(info.shape.rbegin(), info.shape.rend()) : info.shape;
    if (c10::IntArrayRef(file_shape) != target.sizes()) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "adapter tensor shape does not match the base model",
                       {{"tensor", info.name}, {"file_shape", shape_text(info.shape)}, {"model_shape", shape_text(target.sizes())}});
    }
    torch::Tensor value = file->load(info.name);
    if (transposed) value = value.t();
    target.copy_(value.to(target.device(), target.scalar_type()));
    loaded.insert(found->first);
  }
  const auto may_be_absent = [&](const std::string& name) {
    for (const std::string& module : adapters.modules_to_save().module_paths()) {
      if (name.rfind(module + ".", 0) != 0) continue;
      for (const std::string& absent : modules_not_in_file) {
        if (module.size() >= absent.size() && module.compare(module.size() - absent.size(), absent.size(), absent) == 0) return true;
      }
    }
    return false;
  };
  for (const auto& [name, tensor] : expected) {
    if (loaded.count(name) == 0 && !may_be_absent(name)) {
      throw ModelError(ErrorCode::kIncompatibleArchitecture, "adapter file lacks a tensor that its config implies",
                       {{"tensor", kPeftKeyPrefix + name}, {"path", weights.string()}});
    }
  }
  return adapters;
}

void save_adapter(const AdapterSet& adapters, const std::string& directory,
                  const std::function<torch::Tensor(const std::string&)>& gathered) {
  std::error_code error;
  fs::create_directories(directory, error);
  if (error) {
    throw StorageError(ErrorCode::kDirectoryNotWritable, "cannot create the adapter directory",
                       {{"path", directory}, {"error", error.message()}});
  }
  save_safetensors((fs::path(directory) / kAdapterWeightsFileName).string(), adapters.peft_state_dict(gathered));
  write_file_atomically((fs::path(directory) / "adapter_config.json").string(),
                        adapter_config_to_json(adapters.saved_config()).dump(2) + "\n");
}

}  // namespace n3rlhf
