// adapter_parity.cpp: adapted and merged logits of each adapter fixture against PEFT's.
#include "adapters/adapter_parity.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "adapters/adapters.hpp"
#include "adapters/quantized_base.hpp"
#include "core/error.hpp"
#include "model/pretrained.hpp"
#include "model/safetensors.hpp"

namespace n3rlhf {

namespace {

namespace fs = std::filesystem;

nlohmann::json fixture_of(const fs::path& adapter_directory) {
  const fs::path fixture_file = adapter_directory / "fixture.json";
  if (!fs::exists(fixture_file)) return nlohmann::json::object();
  std::ifstream in(fixture_file);
  return nlohmann::json::parse(in);
}

std::string base_model_of(const fs::path& fixtures, const fs::path& adapter_directory) {
  const nlohmann::json fixture = fixture_of(adapter_directory);
  if (fixture.contains("base")) return fixture.at("base").get<std::string>();
  const std::string name = adapter_directory.filename().string();
  std::string best;
  if (fs::is_directory(fixtures / "models")) {
    for (const auto& entry : fs::directory_iterator(fixtures / "models")) {
      const std::string model = entry.path().filename().string();
      if (name.rfind(model + "_", 0) == 0 && model.size() > best.size()) best = model;
    }
  }
  if (best.empty()) {
    throw ModelError(ErrorCode::kModelNotFound, "no base model for the adapter fixture", {{"adapter", name}});
  }
  return best;
}

void adapter_suite(const std::string& fixtures_directory, const std::function<void(const ParityCheck&)>& emit) {
  const fs::path fixtures(fixtures_directory);
  const fs::path root = fixtures / "adapters";
  if (!fs::is_directory(root)) return;
  std::vector<fs::path> directories;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory() && fs::exists(entry.path() / "expected.safetensors")) directories.push_back(entry.path());
  }
  std::sort(directories.begin(), directories.end());
  for (const fs::path& directory : directories) {
    const std::string prefix = "adapter " + directory.filename().string();
    try {
      const auto expected = SafetensorsFile::open((directory / "expected.safetensors").string());
      PretrainedModel base = load_pretrained((fixtures / "models" / base_model_of(fixtures, directory)).string());
      base.model->eval();
      AttachOptions options;
      options.trainable = false;
      // QLoRA references: the adapted layers' base weights quantized as bitsandbytes did.
      const nlohmann::json fixture = fixture_of(directory);
      if (fixture.contains("quantization")) {
        const nlohmann::json& settings = fixture.at("quantization");
        quant::QuantizationOptions quantization;
        quantization.bits = settings.value("bits", 4);
        quantization.block_size = settings.value("block_size", 64);
        quantization.double_quantization = settings.value("double_quantization", true);
        options.make_base = quantized_base_factory(quantization);
      }
      AdapterSet adapters = load_adapter(base.model, directory.string(), options);
      torch::NoGradGuard no_grad;
      const torch::Tensor ids = expected->load("input_ids");
      const torch::Tensor mask = expected->load("attention_mask");
      const torch::Tensor reference = expected->load("logits");
      emit(tolerance_parity_check(prefix + " logits", base.model->forward(ids, mask), reference));
      if (expected->find("base_logits") != nullptr) {
        AdapterDisabledGuard disabled(adapters);
        emit(tolerance_parity_check(prefix + " disabled (base) logits", base.model->forward(ids, mask), expected->load("base_logits")));
      }
      // The merged base must give the adapted logits too (what `n3rlhf merge` writes).
      adapters.merge_into_base();
      emit(tolerance_parity_check(prefix + " merged logits", base.model->forward(ids, mask), reference));
    } catch (const std::exception& error) {
      emit(failed_parity_check(prefix, error.what()));
    }
  }
}

}  // namespace

ParitySuite adapter_parity_suite() { return {"adapters", adapter_suite}; }

}  // namespace n3rlhf
