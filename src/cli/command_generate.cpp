// command_generate.cpp: `n3rlhf generate MODEL_DIR [options] PROMPT...`: tokenizes each prompt with
// the model's tokenizer.json, generates a batch (left-padded) with the KV cache and prints each
// completion (or, with --json, the ids, log-probs and text as JSON).
#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/cli.hpp"
#include "cli/command_options.hpp"
#include "core/error.hpp"
#include "model/generation.hpp"
#include "model/pretrained.hpp"
#include "tokenizer/tokenizer.hpp"

namespace n3rlhf {

namespace po = boost::program_options;

int generate_command(const std::vector<std::string>& arguments) {
  std::string model_directory;
  std::string tokenizer_path;
  std::string device_name = "cpu";
  std::vector<std::string> prompts;
  GenerationOptions options;
  uint64_t seed = 0;
  bool json_output = false;
  bool no_eos = false;
  bool timing = false;
  CommandOptions command({"generate", "n3rlhf generate MODEL_DIR [options] PROMPT..."});
  command.add()
      ("tokenizer", po::value(&tokenizer_path), "tokenizer.json or a directory holding one (default: MODEL_DIR)")
      ("max-new-tokens", po::value(&options.max_new_tokens)->default_value(32), "tokens to generate at most")
      ("sample", po::bool_switch(&options.do_sample), "sample instead of greedy decoding")
      ("temperature", po::value(&options.temperature)->default_value(1.0), "sampling temperature")
      ("top-k", po::value(&options.top_k)->default_value(0), "keep the k most likely tokens (0: off)")
      ("top-p", po::value(&options.top_p)->default_value(1.0), "keep the smallest set with this probability mass")
      ("seed", po::value(&seed), "seed of the sampling generator")
      ("no-eos", po::bool_switch(&no_eos), "do not stop at the end-of-sequence token")
      ("device", po::value(&device_name), "cpu (float32) or cuda[:N] (bfloat16)")
      ("json", po::bool_switch(&json_output), "print ids, log-probs and text as JSON")
      ("timing", po::bool_switch(&timing), "also print the prefill time and the time per new token (stderr)");
  command.positional("model", &model_directory).positionals("prompt", &prompts);
  if (const std::optional<int> status = command.parse(arguments)) return *status;
  if (model_directory.empty() || prompts.empty()) return command.usage_error("give a model directory and at least one prompt");
  if (command.given("seed")) options.seed = seed;

  const Tokenizer tokenizer = Tokenizer::from_file(tokenizer_path.empty() ? model_directory : tokenizer_path);
  LoadOptions load_options;
  load_options.device = torch::Device(device_name);
  load_options.dtype = load_options.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  load_options.tokenizer_vocab_size = tokenizer.vocab_size();
  PretrainedModel loaded = load_pretrained(model_directory, load_options);

  if (!no_eos) {
    options.eos_token_ids = loaded.config.eos_token_ids;
    if (options.eos_token_ids.empty() && tokenizer.eos_token_id()) options.eos_token_ids.push_back(*tokenizer.eos_token_id());
  }
  const int64_t pad_id = loaded.config.pad_token_id ? *loaded.config.pad_token_id
                         : tokenizer.pad_token_id() ? *tokenizer.pad_token_id()
                         : (options.eos_token_ids.empty() ? 0 : options.eos_token_ids.front());
  options.pad_token_id = pad_id;

  // Left padding, as generation needs the last prompt token of every row in the same column.
  std::vector<std::vector<int32_t>> encoded;
  size_t longest = 0;
  for (const std::string& prompt : prompts) {
    encoded.push_back(tokenizer.encode(prompt, true));
    longest = std::max(longest, encoded.back().size());
  }
  const int64_t batch = static_cast<int64_t>(prompts.size());
  torch::Tensor ids = torch::full({batch, static_cast<int64_t>(longest)}, pad_id, torch::kInt64);
  torch::Tensor mask = torch::zeros({batch, static_cast<int64_t>(longest)}, torch::kInt64);
  for (int64_t row = 0; row < batch; ++row) {
    const auto& tokens = encoded[row];
    const int64_t offset = static_cast<int64_t>(longest - tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) ids[row][offset + static_cast<int64_t>(i)] = tokens[i];
    mask[row].narrow(0, offset, static_cast<int64_t>(tokens.size())).fill_(1);
  }
  const auto started = std::chrono::steady_clock::now();
  const GenerationResult result = generate(loaded.model, ids, mask, options);
  const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (timing && result.new_tokens.size(1) > 1) {
    // The prefill and first token alone, so the rest is the per-token (KV-cache) cost.
    GenerationOptions first_only = options;
    first_only.max_new_tokens = 1;
    const auto prefill_started = std::chrono::steady_clock::now();
    generate(loaded.model, ids, mask, first_only);
    const double prefill_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - prefill_started).count();
    const int64_t decoded = result.new_tokens.size(1) - 1;
    std::cerr << "timing: batch " << batch << ", prompt " << longest << " tokens: prefill + first token " << prefill_ms
              << " ms, then " << (total_ms - prefill_ms) / static_cast<double>(decoded) << " ms per new token ("
              << decoded << " tokens)\n";
  }
  const torch::Tensor new_tokens = result.new_tokens.cpu();
  const torch::Tensor new_mask = result.new_token_mask.cpu();
  const torch::Tensor log_probs = result.new_token_log_probs.cpu();
  nlohmann::json output = nlohmann::json::array();
  for (int64_t row = 0; row < batch; ++row) {
    std::vector<int32_t> generated;
    std::vector<double> generated_log_probs;
    for (int64_t t = 0; t < new_tokens.size(1); ++t) {
      if (new_mask[row][t].item<int64_t>() == 0) break;
      generated.push_back(static_cast<int32_t>(new_tokens[row][t].item<int64_t>()));
      generated_log_probs.push_back(log_probs[row][t].item<double>());
    }
    const std::string text = tokenizer.decode(generated, true);
    if (json_output) {
      output.push_back({{"prompt", prompts[row]}, {"prompt_ids", encoded[row]}, {"ids", generated},
                        {"log_probs", generated_log_probs}, {"text", text}});
    } else {
      std::cout << prompts[row] << text << "\n";
    }
  }
  if (json_output) std::cout << output.dump(2) << "\n";
  return 0;
}

}  // namespace n3rlhf
