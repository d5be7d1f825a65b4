"""online_reference.py: TRL's GRPO, RLOO and PPO losses and advantages on fixed random batches, as
JSON, for algos_online_peer_test to compare n3rlhf's src/algos functions against.

Usage: python online_reference.py OUT_JSON

How TRL is driven (trl==1.16.0, pinned in requirements.txt):
- GRPO loss: GRPOTrainer._compute_loss itself runs, on a trainer object made without __init__
  and given the attributes that method reads; _get_per_token_logps_and_entropies is replaced by
  a function returning the batch's per-token log-probs (a leaf tensor, so the gradient with
  respect to them is read after backward).
- RLOO loss: RLOOTrainer._compute_loss, the same way.
- GRPO and RLOO advantages: TRL computes them inside _generate_and_score_completions, which
  generates; the lines that turn rewards into advantages (sum_then_normalize with one reward
  function, TRL's leave-one-out baseline, and the KL in RLOO's reward) are replicated below with
  TRL's own nanstd helper (trl.trainer.utils.nanstd).
- PPO: TRL 1.16 ships no PPOTrainer (it left trl.experimental.ppo); the formulas of the last
  trl/experimental/ppo/ppo_trainer.py (masked_mean / masked_var / masked_whiten, the k1/k3 KL in
  the reward with the score at the "p1" position, whiten_rewards, GAE, whitened advantages, the
  clipped value and policy losses, missing_eos_penalty) are replicated line for line.
"""
import json
import sys
import warnings
from collections import defaultdict
from types import SimpleNamespace

warnings.filterwarnings("ignore")

import torch
from trl import GRPOTrainer, RLOOTrainer
from trl.trainer.utils import nanstd

out_path = sys.argv[1]
torch.manual_seed(1234)

B, G, T = 8, 4, 7  # 2 groups of 4 completions, 7 response positions


def floats(tensor):
    return [float(x) for x in tensor.detach().double().reshape(-1).tolist()]


def norm(tensor):
    return float(tensor.detach().double().norm().item())


class Accel:
    num_processes = 1

    @staticmethod
    def gather(x):
        return x

    @staticmethod
    def reduce(x, reduction="sum"):
        return x


# The batch: completion lengths (one full-width row, one of a single token), per-token log-probs of
# the current policy, the rollout ("old") policy and the reference, and rewards (group 1 all equal).
lengths = torch.tensor([7, 3, 5, 1, 6, 2, 4, 7])
mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).float()
logps = (torch.randn(B, T) * 0.5 - 1.5).float()
old = (logps + torch.randn(B, T) * 0.3).float()
ref = (logps + torch.randn(B, T) * 0.2).float()
rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 1.0, 1.0, 1.0, 1.0])

batch = {"B": B, "G": G, "T": T, "mask": floats(mask), "logps": floats(logps), "old": floats(old), "ref": floats(ref),
         "rewards": floats(rewards)}


def grpo_advantages(rewards, scale_rewards):
    """GRPOTrainer._generate_and_score_completions, multi_objective_aggregation sum_then_normalize."""
    rewards_per_func = rewards.unsqueeze(1)
    reward_weights = torch.ones(1)
    r = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    mean_grouped_rewards = torch.nanmean(r.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(r.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    else:
        std_rewards = nanstd(r).expand_as(r)
    advantages = r - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def grpo_case(loss_type, beta, scale_rewards, epsilon_high, delta):
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    per_token_logps = logps.clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (per_token_logps, torch.zeros(B, T), None)
    trainer.accelerator = Accel()
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer.aux_loss_enabled = False
    trainer._entropy_bonus_enabled = False
    trainer.top_entropy_quantile = 1.0
    trainer.off_policy_mask_threshold = None
    trainer.importance_sampling_level = "token"
    trainer.beta = beta
    trainer.loss_type = loss_type
    trainer.epsilon_low = 0.2
    trainer.epsilon_high = epsilon_high if epsilon_high is not None else 0.2
    trainer.use_vllm = False
    trainer.vllm_importance_sampling_correction = False
    trainer.max_completion_length = 10
    trainer.current_gradient_accumulation_steps = 2
    trainer.args = SimpleNamespace(use_bias_correction_kl=False, delta=delta, steps_per_generation=2)
    trainer.model = torch.nn.Linear(1, 1)  # .training is True: train mode
    advantages = grpo_advantages(rewards, scale_rewards)
    num_items = mask.sum() + 5.0  # the tokens of the accumulated global batch, more than this micro batch
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": num_items}
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return {"loss_type": loss_type, "beta": beta, "scale_rewards": scale_rewards, "epsilon_high": epsilon_high,
            "delta": delta, "gradient_accumulation_steps": 2, "max_completion_length": 10,
            # TRL's dapo normaliser: num_items_in_batch / num_processes * accumulation / steps_per_generation
            "dapo_tokens": float(num_items) / 1 * 2 / 2,
            "advantages": floats(advantages), "loss": float(loss), "metrics": metrics,
            "grad": floats(per_token_logps.grad), "grad_norm": norm(per_token_logps.grad)}


def rloo_case(beta, normalize, epsilon_high):
    # Advantages: RLOOTrainer._generate_and_score_completions, one reward function.
    r = rewards.clone()
    per_token_kl = old - ref
    kl = (per_token_kl * mask).sum(-1)
    r = r - beta * kl if beta != 0.0 else r
    grouped = r.view(-1, G)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
    baselines = ((torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (counts - 1)).view(-1)
    advantages = r - baselines
    if normalize:
        advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
    advantages = torch.nan_to_num(advantages, nan=0.0)

    trainer = RLOOTrainer.__new__(RLOOTrainer)
    per_token_logps = logps.clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (per_token_logps, torch.zeros(B, T), None)
    trainer.accelerator = Accel()
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer.aux_loss_enabled = False
    trainer.epsilon_low = 0.2
    trainer.epsilon_high = epsilon_high if epsilon_high is not None else 0.2
    trainer.model = torch.nn.Linear(1, 1)
    old_logps = (old * mask).sum(1)
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "old_logps": old_logps}
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return {"beta": beta, "normalize": normalize, "epsilon_high": epsilon_high, "advantages": floats(advantages),
            "loss": float(loss), "metrics": metrics, "grad": floats(per_token_logps.grad),
            "grad_norm": norm(per_token_logps.grad)}


# --- PPO: trl/experimental/ppo/ppo_trainer.py (the last TRL PPOTrainer), replicated ----------
INVALID_LOGPROB = 1.0


def masked_mean(values, mask, axis=None):
    if axis is not None:
        return (values * mask).sum(axis=axis) / mask.sum(axis=axis)
    return (values * mask).sum() / mask.sum()


def masked_var(values, mask, unbiased=True):
    mean = masked_mean(values, mask)
    centered_values = values - mean
    variance = masked_mean(centered_values**2, mask)
    if unbiased:
        mask_sum = mask.sum()
        bessel_correction = mask_sum / (mask_sum - 1)
        variance = variance * bessel_correction
    return variance


def masked_whiten(values, mask, shift_mean=True):
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


# The rollout: sequence_lengths is the index of each response's last token; scores from the
# reward model; whether the response contains EOS.
sequence_lengths = lengths - 1
ppo_scores = torch.randn(B)
contain_eos_token = torch.tensor([True, True, False, True, False, True, True, True])
rollout_values = torch.randn(B, T) * 0.5
new_policy = (logps + torch.randn(B, T) * 0.25).float()
new_values = (rollout_values + torch.randn(B, T) * 0.3).float()
batch.update({"ppo_scores": floats(ppo_scores), "contain_eos": [bool(x) for x in contain_eos_token],
              "sequence_lengths": [int(x) for x in sequence_lengths], "rollout_values": floats(rollout_values),
              "new_logps": floats(new_policy), "new_values": floats(new_values)})


def ppo_case(kl_estimator, whiten_rewards, gamma, lam, missing_eos_penalty):
    kl_coef, cliprange, cliprange_value, vf_coef = 0.05, 0.2, 0.2, 0.1
    scores = ppo_scores.clone()
    if missing_eos_penalty is not None:
        scores[~contain_eos_token] -= missing_eos_penalty
    response_idxs = torch.arange(T).repeat(B, 1)
    padding_mask = response_idxs > sequence_lengths.unsqueeze(1)
    logprobs = torch.masked_fill(old, padding_mask, INVALID_LOGPROB)
    ref_logprobs = torch.masked_fill(ref, padding_mask, INVALID_LOGPROB)
    sequence_lengths_p1 = sequence_lengths + 1
    padding_mask_p1 = response_idxs > (sequence_lengths_p1.unsqueeze(1))
    values = torch.masked_fill(rollout_values, padding_mask_p1, 0)

    logr = ref_logprobs - logprobs
    kl = -logr if kl_estimator == "k1" else (logr.exp() - 1) - logr
    non_score_reward = -kl_coef * kl
    token_rewards = non_score_reward.clone()
    actual_start = torch.arange(token_rewards.size(0))
    actual_end = torch.where(sequence_lengths_p1 < token_rewards.size(1), sequence_lengths_p1, sequence_lengths)
    token_rewards[actual_start, actual_end] += scores
    if whiten_rewards:
        token_rewards = masked_whiten(token_rewards, mask=~padding_mask_p1, shift_mean=False)
        token_rewards = torch.masked_fill(token_rewards, padding_mask_p1, 0)
    lastgaelam = 0
    advantages_reversed = []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else 0.0
        delta = token_rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    raw_advantages = torch.stack(advantages_reversed[::-1], axis=1)
    returns = raw_advantages + values
    advantages = masked_whiten(raw_advantages, ~padding_mask)
    advantages = torch.masked_fill(advantages, padding_mask, 0)

    # One micro batch of the whole batch (the loss is per micro batch in TRL).
    new_logprobs_leaf = new_policy.clone().requires_grad_(True)
    vpred_leaf = new_values.clone().requires_grad_(True)
    new_logprobs = torch.masked_fill(new_logprobs_leaf, padding_mask, INVALID_LOGPROB)
    vpred = torch.masked_fill(vpred_leaf, padding_mask_p1, 0)
    vpredclipped = torch.clamp(vpred, values - cliprange_value, values + cliprange_value)
    vf_losses1 = torch.square(vpred - returns)
    vf_losses2 = torch.square(vpredclipped - returns)
    vf_loss_max = torch.max(vf_losses1, vf_losses2)
    vf_loss = 0.5 * masked_mean(vf_loss_max, ~padding_mask_p1)
    vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).float(), ~padding_mask_p1)
    logprobs_diff = new_logprobs - logprobs
    ratio = torch.exp(logprobs_diff)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    pg_loss = masked_mean(pg_loss_max, ~padding_mask)
    loss = pg_loss + vf_coef * vf_loss
    loss.backward()
    pg_clipfrac = masked_mean((pg_losses2 > pg_losses).float(), ~padding_mask)
    return {"kl_estimator": kl_estimator, "whiten_rewards": whiten_rewards, "gamma": gamma, "lam": lam,
            "missing_eos_penalty": missing_eos_penalty, "kl_coef": kl_coef, "cliprange": cliprange,
            "cliprange_value": cliprange_value, "vf_coef": vf_coef,
            # The tensors TRL's formulas saw (padding filled as TRL fills it).
            "logprobs": floats(logprobs), "ref_logprobs": floats(ref_logprobs), "values": floats(values),
            "new_logprobs": floats(new_logprobs.detach()), "vpred": floats(vpred.detach()),
            "response_mask": floats((~padding_mask).float()), "value_mask": floats((~padding_mask_p1).float()),
            "token_rewards": floats(token_rewards), "advantages": floats(advantages), "returns": floats(returns),
            "pg_loss": float(pg_loss), "vf_loss": float(vf_loss), "loss": float(loss), "pg_clipfrac": float(pg_clipfrac),
            "vf_clipfrac": float(vf_clipfrac), "grad_logps": floats(new_logprobs_leaf.grad),
            "grad_logps_norm": norm(new_logprobs_leaf.grad), "grad_values": floats(vpred_leaf.grad),
            "grad_values_norm": norm(vpred_leaf.grad)}


result = {
    "batch": batch,
    "grpo": [grpo_case("grpo", 0.0, "group", None, None), grpo_case("bnpo", 0.04, "batch", None, None),
             grpo_case("dr_grpo", 0.04, "none", None, None), grpo_case("dapo", 0.0, "group", 0.28, None),
             grpo_case("dapo", 0.04, "group", 0.28, 1.5), grpo_case("grpo", 0.04, "batch", 0.28, 1.4)],
    "rloo": [rloo_case(0.0, False, None), rloo_case(0.05, False, None), rloo_case(0.05, True, 0.28)],
    "ppo": [ppo_case("k1", False, 1.0, 0.95, None), ppo_case("k3", True, 0.99, 0.9, 1.0), ppo_case("k1", True, 1.0, 1.0, 0.5)],
}
with open(out_path, "w") as f:
    json.dump(result, f)
