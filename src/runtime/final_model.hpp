// final_model.hpp: writing what a run trained into output.dir: the policy in Hugging Face format
// (a PPO policy's value head inside it under TRL's v_head.summary names), or under PEFT the
// adapter in PEFT's format with the tokenizer files (and the value head beside it in
// value_head.safetensors); PPO's separate critic in output.dir/critic.
#pragma once

#include "comm/communicator.hpp"
#include "core/config.hpp"
#include "runtime/training_setup.hpp"
#include "shard/sharding_engine.hpp"

namespace n3rlhf {

// A collective (FSDP gathers the parameters); rank 0 writes.
void save_trained_model(const RLHFConfig& config, TrainingModels& models, ShardingEngine& engine, Communicator& communicator);

// PPO's separate critic (a sequence-classification model) in Hugging Face format into
// output.dir/critic, with the tokenizer files. A collective; rank 0 writes.
void save_trained_critic(const RLHFConfig& config, CausalTransformer& critic, ShardingEngine& engine, Communicator& communicator);

}  // namespace n3rlhf
