// online_roles.cpp: OnlineTrainer's iteration in a split layout (distributed.layout with role
// counts), top to bottom:
//   weights    the policy's trainable parameters (FSDP gathers them) from its lead rank to every
//              rollout rank, in buckets of distributed.weight_sync_bucket_mb, with their version
//   generate   each rollout rank samples its share of the prompt batch; every rank gets all of it
//   score      each reward rank scores its share (rules, reward model, safety); every rank gets all
//   reference  each reference rank computes its share's reference log-probs; every rank gets all
//   learn      each policy rank takes its share and goes on as in the colocated layout
//              (values, advantages, update) over the policy's own communicator
// With ppo.async_steps 1 the rollout ranks receive the weights right after the scores and
// generate the next batch while the policy computes the reference and trains (one update of
// lag, recorded per batch and checked). A role without ranks of its own shares others'
// (reference: the policy's, reward: the rollout's). Sampling is a function of (seed, prompt batch, prompt), so which rank generates a
// prompt changes nothing: the split layout computes what the colocated one does.
#include <algorithm>

#include "core/error.hpp"
#include "core/fault_injection.hpp"
#include "runtime/online_trainer.hpp"

namespace n3rlhf {

// Where a split-layout job stands (iteration, prompt batches drawn), from the policy's lead to
// every rank: the rollout, reference and reward ranks keep no checkpoint of their own.
void OnlineTrainer::share_loop_position() {
  torch::Tensor position = torch::tensor({static_cast<double>(state_.step), static_cast<double>(prompt_batches_)},
                                         torch::TensorOptions().dtype(torch::kFloat64)).to(device_);
  if (world_->size() > 1) world_->broadcast(position)->wait();
  const torch::Tensor host = position.to(torch::kCPU);
  state_.step = static_cast<int64_t>(host[0].item<double>());
  prompt_batches_ = static_cast<int64_t>(host[1].item<double>());
}

// The tensors the weight sync moves, in synced_names_ order: on policy ranks the full parameters
// (gathered by the engine: a collective over the policy's ranks), on rollout ranks their copy's.
std::vector<torch::Tensor> OnlineTrainer::synced_parameters() {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> gathered;
  if (engine_) {
    for (auto& [name, tensor] : engine_->gathered_parameters()) gathered.emplace(name, tensor);
  }
  std::map<std::string, torch::Tensor> own;
  for (const auto& item : models_.policy.model->named_parameters()) own.emplace(item.key(), item.value());
  std::vector<torch::Tensor> out;
  for (const std::string& name : synced_names_) {
    const auto found = gathered.find(name);
    out.push_back(found != gathered.end() ? found->second : own.at(name));
  }
  return out;
}

WeightSyncStats OnlineTrainer::sync_rollout_weights() {
  std::vector<torch::Tensor> tensors;
  if (plays(Role::kPolicy) || plays(Role::kRollout)) tensors = synced_parameters();
  Communicator* group = roles_->weight_sync_group();
  if (group == nullptr) return {};
  // The version first: the policy updates the weights come from.
  torch::Tensor version = torch::tensor({static_cast<double>(state_.step)}, torch::TensorOptions().dtype(torch::kFloat64)).to(device_);
  group->broadcast(version)->wait();
  weight_version_ = static_cast<int64_t>(version.item<double>());
  WeightSyncOptions options;
  options.bucket_bytes = static_cast<int64_t>(config_.distributed.weight_sync_bucket_mb * 1024.0 * 1024.0);
  options.device = device_;
  return broadcast_tensors(*group, tensors, options);
}

// This rank's even share of `prompts` among the ranks of `role` (empty when it does not play it).
std::vector<int64_t> OnlineTrainer::role_share(const std::vector<int64_t>& prompts, Role role) const {
  const int index = roles_->index_in(role);
  if (index < 0) return {};
  const int64_t per = static_cast<int64_t>(prompts.size()) / static_cast<int64_t>(roles_->ranks_of(role).size());
  return std::vector<int64_t>(prompts.begin() + index * per, prompts.begin() + (index + 1) * per);
}

// Prompts [first_prompt, first_prompt + prompt_count) of a batch with their completions, rows built.
Experience OnlineTrainer::experience_of(const CompletionSlice& batch, int64_t first_prompt, int64_t prompt_count) const {
  const int64_t group = config_.samples_per_prompt();
  Experience experience;
  experience.prompts.assign(batch.prompts.begin() + first_prompt, batch.prompts.begin() + first_prompt + prompt_count);
  for (int64_t i = first_prompt * group; i < (first_prompt + prompt_count) * group; ++i) {
    SampledCompletion completion = batch.completions[static_cast<size_t>(i)];
    completion.request -= first_prompt;
    experience.completions.push_back(std::move(completion));
  }
  assemble_rows(experience);
  return experience;
}

// The reward ranks score their shares; every rank gets every completion's rewards, the safety
// filter's keep flags and the unsafe share.
CombinedRewards OnlineTrainer::share_rewards(const CompletionSlice& batch, std::vector<bool>& keep, std::map<std::string, double>& metrics,
                                             double& busy) {
  const std::vector<int>& sources = roles_->ranks_of(Role::kReward);
  std::vector<double> packed;
  if (plays(Role::kReward)) {
    fault_point("reward_scoring", world_->rank(), state_.step + 1);
    const auto started = OnlineClock::now();
    const int64_t per = static_cast<int64_t>(batch.prompts.size()) / static_cast<int64_t>(sources.size());
    Experience experience = experience_of(batch, roles_->index_in(Role::kReward) * per, per);
    score(experience);
    const torch::Tensor per_term = experience.rewards.per_term.to(torch::kCPU).to(torch::kFloat64).contiguous();
    const torch::Tensor total = experience.rewards.total.to(torch::kCPU).to(torch::kFloat64).contiguous();
    const auto unsafe = experience.metrics.find("safety/unsafe_share");
    packed = {static_cast<double>(total.numel()), static_cast<double>(per_term.size(1)), unsafe != experience.metrics.end() ? unsafe->second : -1.0};
    packed.insert(packed.end(), per_term.data_ptr<double>(), per_term.data_ptr<double>() + per_term.numel());
    packed.insert(packed.end(), total.data_ptr<double>(), total.data_ptr<double>() + total.numel());
    for (int64_t i = 0; i < total.numel(); ++i) packed.push_back(experience.keep.empty() || experience.keep[static_cast<size_t>(i)] ? 1.0 : 0.0);
    busy += seconds_since(started);
  }
  std::vector<torch::Tensor> per_terms, totals;
  double unsafe_sum = 0.0;
  bool any_dropped = false;
  keep.clear();
  for (const std::vector<double>& part : share_from_sources(*world_, sources, packed, device_)) {
    const int64_t n = static_cast<int64_t>(part.at(0));
    const int64_t terms = static_cast<int64_t>(part.at(1));
    if (static_cast<int64_t>(part.size()) != 3 + n * terms + 2 * n) {
      throw TrainingError(ErrorCode::kDistributedSyncFailure, "a reward rank sent " + std::to_string(part.size()) + " numbers for " +
                                                                  std::to_string(n) + " completions", {{"phase", "scoring"}});
    }
    unsafe_sum += part[2];
    const auto options = torch::TensorOptions().dtype(torch::kFloat64);
    per_terms.push_back(torch::tensor(std::vector<double>(part.begin() + 3, part.begin() + 3 + n * terms), options).view({n, terms}));
    totals.push_back(torch::tensor(std::vector<double>(part.begin() + 3 + n * terms, part.begin() + 3 + n * terms + n), options));
    for (int64_t i = 0; i < n; ++i) {
      keep.push_back(part[static_cast<size_t>(3 + n * terms + n + i)] != 0.0);
      any_dropped = any_dropped || !keep.back();
    }
  }
  if (unsafe_sum >= 0.0) metrics["safety/unsafe_share"] = unsafe_sum / static_cast<double>(sources.size());
  if (!any_dropped) keep.clear();  // nothing left out: the loss mask stays as it is
  CombinedRewards rewards;
  rewards.names = rewards_.names();
  rewards.weights = rewards_.weights();
  rewards.per_term = torch::cat(per_terms).to(torch::kFloat32);
  rewards.total = torch::cat(totals).to(torch::kFloat32);
  return rewards;
}

// The reference ranks' log-probs of their shares; every rank gets every completion's, one after
// the other (each completion's tokens in order), as float32 [sum of the completions' lengths].
// Overlapped (ppo.async_steps), the rollout ranks are generating meanwhile and take no part.
torch::Tensor OnlineTrainer::share_reference(const CompletionSlice& batch, double& busy) {
  const std::vector<int>& sources = roles_->ranks_of(Role::kReference);
  Communicator& group = consumers_ ? *consumers_ : *world_;
  std::vector<int> roots;
  for (int rank : sources) roots.push_back(consumers_ ? consumer_rank_.at(static_cast<size_t>(rank)) : rank);
  std::vector<double> packed;
  if (plays(Role::kReference)) {
    const auto started = OnlineClock::now();
    const int64_t per = static_cast<int64_t>(batch.prompts.size()) / static_cast<int64_t>(sources.size());
    Experience experience = experience_of(batch, roles_->index_in(Role::kReference) * per, per);
    const torch::Tensor log_probs = reference_forward(experience.rows).to(torch::kCPU).to(torch::kFloat64).contiguous();
    for (size_t i = 0; i < experience.completions.size(); ++i) {
      const double* row = log_probs.data_ptr<double>() + static_cast<int64_t>(i) * log_probs.size(1);
      packed.insert(packed.end(), row, row + experience.completions[i].tokens.size());
    }
    busy += seconds_since(started);
  }
  std::vector<double> all;
  for (const std::vector<double>& part : share_from_sources(group, roots, packed, device_)) {
    all.insert(all.end(), part.begin(), part.end());
  }
  size_t expected = 0;
  for (const SampledCompletion& completion : batch.completions) expected += completion.tokens.size();
  if (all.size() != expected) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure, "the reference ranks sent " + std::to_string(all.size()) +
                                                                " log-probs for " + std::to_string(expected) + " completion tokens",
                        {{"phase", "reference"}});
  }
  return torch::tensor(all, torch::TensorOptions().dtype(torch::kFloat64)).to(torch::kFloat32);
}

// A stalled or failed exchange names the roles of the ranks that did not arrive and the phase.
std::map<std::string, double> OnlineTrainer::iterate_split() {
  try {
    return split_iteration();
  } catch (const TrainingError& error) {
    if (error.code() != ErrorCode::kDistributedSyncFailure) throw;
    std::string missing;
    for (const auto& [key, value] : error.context()) {
      if (key == "missing_world_ranks") missing = value;
    }
    std::string who;
    for (size_t start = 0; start < missing.size();) {
      const size_t comma = std::min(missing.find(',', start), missing.size());
      const int rank = std::stoi(missing.substr(start, comma - start));
      std::string roles;
      for (Role role : roles_of_rank(config_, rank)) roles += (roles.empty() ? "" : "+") + std::string(role_name(role));
      who += (who.empty() ? "" : ", ") + roles + " rank " + std::to_string(rank);
      start = comma + 1;
    }
    ErrorContext context = error.context();
    context.emplace_back("phase", phase_);
    if (!who.empty()) context.emplace_back("roles", who);
    throw TrainingError(ErrorCode::kDistributedSyncFailure,
                        phase_ + (who.empty() ? "" : ": the " + who + " did not arrive") + ": " + error.message(), context,
                        std::current_exception());
  }
}

// The rollout ranks generate prompt batch `prompt_batch` (each its share) with the weights they
// hold; returns their packed slice (empty elsewhere). Every rank notes the batch as pending.
std::vector<double> OnlineTrainer::generate_pending(double& busy) {
  const int64_t prompt_batch = prompt_batches_++;
  pending_prompts_ = prompts_.iteration_prompts(prompt_batch, config_.ppo.rollout_batch_size);
  batch_pending_ = true;
  if (!plays(Role::kRollout)) return {};
  fault_point("rollout_generation", world_->rank(), state_.step + 1);
  const auto started = OnlineClock::now();
  Experience generated = generate(role_share(pending_prompts_, Role::kRollout), prompt_batch);
  CompletionSlice mine;
  mine.prompts = generated.prompts;
  mine.completions = std::move(generated.completions);
  mine.sampling = generated.sampling;
  mine.weight_version = weight_version_;
  busy += seconds_since(started);
  return pack_completions(mine);
}

std::map<std::string, double> OnlineTrainer::split_iteration() {
  const auto started = OnlineClock::now();
  const std::string iteration = "iteration " + std::to_string(state_.step + 1);
  const bool overlap = config_.ppo.async_steps > 0;
  std::map<std::string, double> seconds;
  double busy = 0.0;  // seconds this rank computed or sent weights (the rest it waited)
  WeightSyncStats sync;
  const auto sync_weights = [&] {
    set_phase(iteration + " (weight sync: policy -> rollout)");
    const auto phase = OnlineClock::now();
    sync = sync_rollout_weights();
    seconds["weight_sync"] += seconds_since(phase);
    if (plays(Role::kPolicy) || plays(Role::kRollout)) busy += seconds_since(phase);
  };

  // In turn: the weights of every update so far, then this iteration's batch. Overlapped: the
  // batch was generated during the previous iteration (here only for the first one).
  set_phase(iteration + " (generation)");
  auto phase = OnlineClock::now();
  if (!batch_pending_) {
    sync_weights();
    set_phase(iteration + " (generation)");
    pending_packed_ = generate_pending(busy);
  }
  std::vector<CompletionSlice> slices;
  for (const std::vector<double>& part : share_from_sources(*world_, roles_->ranks_of(Role::kRollout), pending_packed_, device_)) {
    slices.push_back(unpack_completions(part));
  }
  pending_packed_.clear();
  batch_pending_ = false;
  const CompletionSlice batch = concatenate_slices(slices);
  seconds["generation"] = seconds_since(phase);
  const int64_t staleness = state_.step - batch.weight_version;
  if (staleness < 0 || staleness > config_.ppo.async_steps || batch.prompts != pending_prompts_) {
    throw TrainingError(ErrorCode::kDistributedSyncFailure,
                        "the rollout of " + iteration + " was generated with the policy's weights after " +
                            std::to_string(batch.weight_version) + " update(s), but the policy has made " + std::to_string(state_.step) +
                            " and the job allows ppo.async_steps " + std::to_string(config_.ppo.async_steps) + " update(s) of lag" +
                            (batch.prompts != pending_prompts_ ? ", and its prompts are not the iteration's" : ""),
                        {{"role", "rollout"}, {"phase", "generation"}, {"iteration", std::to_string(state_.step + 1)}});
  }

  set_phase(iteration + " (scoring)");
  phase = OnlineClock::now();
  std::map<std::string, double> metrics;
  std::vector<bool> keep;
  const CombinedRewards rewards = share_rewards(batch, keep, metrics, busy);
  seconds["scoring"] = seconds_since(phase);

  if (overlap && state_.step + 1 < iterations_) {
    // The rollout ranks go on with the next batch on this update's weights while the policy
    // trains; the reference exchange below leaves them out.
    sync_weights();
    set_phase(iteration + " (generation of the next batch)");
    pending_packed_ = generate_pending(busy);
  }

  torch::Tensor reference;
  if (online_needs_reference(config_)) {
    set_phase(iteration + " (reference)");
    phase = OnlineClock::now();
    if (!overlap || !only_rollout()) reference = share_reference(batch, busy);
    seconds["reference"] = seconds_since(phase);
  }

  std::map<std::string, double> values;
  if (plays(Role::kPolicy)) {
    const auto learning = OnlineClock::now();
    const int64_t group = config_.samples_per_prompt();
    const int64_t per = static_cast<int64_t>(batch.prompts.size()) / communicator_->size();
    const int64_t first = communicator_->rank() * per;
    Experience experience = experience_of(batch, first, per);
    experience.sampling = batch.sampling;
    experience.rewards.names = rewards.names;
    experience.rewards.weights = rewards.weights;
    experience.rewards.per_term = rewards.per_term.narrow(0, first * group, per * group);
    experience.rewards.total = rewards.total.narrow(0, first * group, per * group);
    if (!keep.empty()) experience.keep.assign(keep.begin() + first * group, keep.begin() + (first + per) * group);
    if (reference.defined()) {
      // This rank's completions' log-probs, laid out [N, T] as the rows lay them.
      int64_t offset = 0;
      for (int64_t i = 0; i < first * group; ++i) offset += static_cast<int64_t>(batch.completions[static_cast<size_t>(i)].tokens.size());
      torch::Tensor laid = torch::zeros({static_cast<int64_t>(experience.completions.size()), experience.rows.width}, torch::kFloat32);
      for (size_t i = 0; i < experience.completions.size(); ++i) {
        const int64_t length = static_cast<int64_t>(experience.completions[i].tokens.size());
        laid[static_cast<int64_t>(i)].narrow(0, 0, length).copy_(reference.narrow(0, offset, length));
        offset += length;
      }
      experience.ref_log_probs = laid.to(device_);
    }
    experience.metrics = metrics;
    experience.metrics["weight_sync/bytes"] = sync.bytes;
    experience.metrics["weight_sync/seconds"] = sync.seconds;
    experience.metrics["weight_sync/buckets"] = static_cast<double>(sync.buckets);
    experience.metrics["rollout/weight_staleness"] = static_cast<double>(staleness);
    experience.seconds = seconds;
    values = learn(experience, started);
    busy += seconds_since(learning);
  } else {
    ++state_.step;
  }

  // Every rank ends the iteration with the policy lead's loss and reward; the lead learns how
  // much of the iteration each rank waited (idle/<role>_share, by each rank's first role). Every
  // rank leaves this gather together, so the step is measured after it, its wait included.
  set_phase(iteration + " (end)");
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor mine = torch::tensor({values.count("loss") ? values["loss"] : 0.0, values.count("reward") ? values["reward"] : 0.0, busy},
                                     options).to(device_);
  torch::Tensor all = torch::empty({3 * world_->size()}, options.device(device_));
  world_->all_gather(mine, all)->wait();
  const double step = seconds_since(started);
  values["time/iteration"] = step;  // learn() took it before the gather
  const torch::Tensor host = all.to(torch::kCPU).view({world_->size(), 3});
  values["loss"] = host[0][0].item<double>();
  values["reward"] = host[0][1].item<double>();
  std::map<std::string, std::pair<double, int>> idle;
  for (int rank = 0; rank < world_->size(); ++rank) {
    auto& [sum, count] = idle[role_name(roles_of_rank(config_, rank).front())];
    sum += 1.0 - std::min(1.0, host[rank][2].item<double>() / std::max(step, 1e-9));
    ++count;
  }
  for (const auto& [role, entry] : idle) values["idle/" + role + "_share"] = entry.first / entry.second;
  return values;
}

}  // namespace n3rlhf
