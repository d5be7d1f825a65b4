"""trl_reference.py: runs TRL's own loss code (CPOTrainer for SimPO, ORPOTrainer, KTOTrainer,
RewardTrainer) on random batches through the real tiny Llama fixtures, and writes the per-sequence
log-probs (or scores) TRL saw with the losses and metrics TRL computed, as JSON, for
algos_trl_peer_test to feed into n3rlhf's losses.

Usage: python trl_reference.py FIXTURES_DIR OUT_JSON
Only the trainers' loss methods run: each trainer object is made without __init__ (which wants a
dataset and training arguments) and given the few attributes those methods read.
"""
import json
import os
import sys
import warnings
from collections import defaultdict
from types import SimpleNamespace

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from trl import KTOTrainer, RewardTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer
from trl.trainer.utils import add_fused_lm_head

fixtures, out_path = sys.argv[1], sys.argv[2]
torch.manual_seed(20240611)
accelerator = Accelerator(cpu=True)
policy = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, "models", "llama_tiny")).float()
policy.eval()  # no dropout in Llama anyway; eval keeps the forward deterministic
vocab = policy.config.vocab_size


def floats(tensor):
    return [float(x) for x in tensor.detach().double().reshape(-1).tolist()]


def trainer_without_init(cls, **attributes):
    trainer = cls.__new__(cls)
    trainer.accelerator = accelerator
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    trainer._total_train_tokens = 0
    trainer._tp_size = 1
    trainer.aux_loss_enabled = False
    trainer.is_encoder_decoder = False
    for key, value in attributes.items():
        setattr(trainer, key, value)
    return trainer


def random_rows(count, prompt_range=(2, 6), response_range=(1, 9)):
    """Token rows (prompt + response), with prompt and response lengths."""
    rows = []
    for _ in range(count):
        prompt = int(torch.randint(*prompt_range, ()).item())
        response = int(torch.randint(*response_range, ()).item())
        rows.append((torch.randint(2, vocab, (prompt + response,)), prompt))
    return rows


def pad_rows(rows):
    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    completion = torch.zeros(len(rows), width, dtype=torch.long)
    for i, (row, prompt) in enumerate(rows):
        ids[i, : len(row)] = row
        attention[i, : len(row)] = 1
        labels[i, prompt : len(row)] = row[prompt:]
        completion[i, prompt : len(row)] = 1
    return ids, attention, labels, completion


def pair_batch(pairs):
    chosen = pad_rows(random_rows(pairs))
    rejected = pad_rows(random_rows(pairs))
    batch = {}
    for name, (ids, attention, labels, _) in (("chosen", chosen), ("rejected", rejected)):
        batch[f"{name}_input_ids"], batch[f"{name}_attention_mask"], batch[f"{name}_labels"] = ids, attention, labels
    return batch


def sums_and_lengths(trainer, batch):
    """Per-sequence log-prob sums and response lengths of chosen and rejected, by TRL's get_batch_logps."""
    result = {}
    with torch.no_grad():
        for name in ("chosen", "rejected"):
            logits = policy(batch[f"{name}_input_ids"], attention_mask=batch[f"{name}_attention_mask"]).logits
            labels = batch[f"{name}_labels"]
            result[f"policy_{name}"] = floats(trainer.get_batch_logps(logits, labels, average_log_prob=False))
            result[f"{name}_lengths"] = floats((labels[:, 1:] != -100).sum(-1))
            # ORPO's NLL covers the whole sequence, prompt included: the same sums over every token.
            everything = batch[f"{name}_input_ids"].masked_fill(batch[f"{name}_attention_mask"] == 0, -100)
            result[f"full_{name}"] = floats(trainer.get_batch_logps(logits, everything, average_log_prob=False))
            result[f"full_{name}_lengths"] = floats((everything[:, 1:] != -100).sum(-1))
    return result


def pairwise_cases(cls, configurations):
    cases = []
    for config in configurations:
        trainer = trainer_without_init(cls, pad_token_id=0, label_pad_token_id=-100, padding_value=0, **config)
        batch = pair_batch(4)
        with torch.no_grad():
            loss, metrics = trainer.get_batch_loss_metrics(policy, batch, train_eval="train")
        case = dict(config)
        case.update(sums_and_lengths(trainer, batch))
        case["loss"] = float(loss)
        case["metrics"] = {key: float(value) for key, value in metrics.items()}
        cases.append(case)
    return cases


simpo = pairwise_cases(
    CPOTrainer,
    [
        dict(loss_type="simpo", beta=2.0, simpo_gamma=0.5, label_smoothing=0.0, cpo_alpha=0.0, alpha=0.0),
        dict(loss_type="simpo", beta=0.7, simpo_gamma=1.3, label_smoothing=0.1, cpo_alpha=0.5, alpha=0.0),
    ],
)
orpo = pairwise_cases(ORPOTrainer, [dict(beta=0.1), dict(beta=0.5)])

# KTO through KTOTrainer._compute_loss with precomputed reference log-probs (random, as a frozen
# reference would give any values) and the mismatched KL batch built as TRL builds it.
kto_policy = AutoModelForCausalLM.from_pretrained(os.path.join(fixtures, "models", "llama_tiny")).float()
add_fused_lm_head(kto_policy, outputs=("log_probs", "entropy", "mean_logits"))
kto_policy.train()
kto = []
for config, labels in (
    (dict(beta=0.1, desirable_weight=1.0, undesirable_weight=1.0), [True, False, True, True, False, False]),
    (dict(beta=0.5, desirable_weight=1.33, undesirable_weight=0.7), [True, True, False, True, True]),
    (dict(beta=0.2, desirable_weight=1.0, undesirable_weight=1.0), [True, True, True]),
):
    rows = random_rows(len(labels))
    ids, attention, _, completion = pad_rows(rows)
    # Row i of the KL batch: prompt i with the completion of row i-1 (TRL rotates completions by one).
    kl_rows = []
    for i, (row, prompt) in enumerate(rows):
        other, other_prompt = rows[i - 1]
        kl_rows.append((torch.cat([row[:prompt], other[other_prompt:]]), prompt))
    kl_ids, kl_attention, _, kl_completion = pad_rows(kl_rows)
    batch = dict(
        input_ids=ids, attention_mask=attention, completion_mask=completion,
        KL_input_ids=kl_ids, KL_attention_mask=kl_attention, KL_completion_mask=kl_completion,
        label=torch.tensor(labels),
    )
    trainer = trainer_without_init(
        KTOTrainer, model=kto_policy, calculate_KL=True, precompute_ref_logps=True, loss_type="kto", **config
    )
    with torch.no_grad():
        policy_logps = kto_policy(
            input_ids=ids, attention_mask=attention, labels=ids.masked_fill(completion == 0, -100), fused_lm_head=True
        ).log_probs.sum(-1)
        kl_policy_logps = trainer._compute_kl_logps(kto_policy, batch)
    batch["ref_logps"] = policy_logps + 0.8 * torch.randn(len(labels))
    batch["ref_KL_logps"] = kl_policy_logps + 0.8 * torch.randn(len(labels)) - 0.3
    loss = trainer._compute_loss(kto_policy, batch, return_outputs=False)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items() if values}
    case = dict(config)
    case.update(
        labels=labels, policy_logps=floats(policy_logps), reference_logps=floats(batch["ref_logps"]),
        kl_policy_logps=floats(kl_policy_logps), kl_reference_logps=floats(batch["ref_KL_logps"]),
        loss=float(loss), metrics={k: float(v) for k, v in metrics.items()},
    )
    kto.append(case)

# Reward model: RewardTrainer.compute_loss on the real sequence-classification fixture.
scorer = AutoModelForSequenceClassification.from_pretrained(os.path.join(fixtures, "models", "llama_tiny_reward"))
scorer = scorer.float().train()
reward = []
for coefficient, with_margin in ((None, False), (0.01, False), (0.05, True)):
    pairs = 5
    ids, attention, _, _ = pad_rows(random_rows(2 * pairs))
    # The fixture's pad id is 1: the head scores the last token before the first pad.
    ids = ids.masked_fill(attention == 0, scorer.config.pad_token_id)
    inputs = dict(input_ids=ids, attention_mask=attention)
    margin = torch.rand(pairs) * 2.0
    if with_margin:
        inputs["margin"] = margin
    trainer = trainer_without_init(
        RewardTrainer, model=scorer, args=SimpleNamespace(center_rewards_coefficient=coefficient)
    )
    loss = trainer.compute_loss(scorer, dict(inputs))
    with torch.no_grad():
        scores = scorer(input_ids=ids, attention_mask=attention).logits.squeeze(-1)
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items() if values}
    case = dict(
        center_rewards_coefficient=coefficient or 0.0, chosen_rewards=floats(scores[:pairs]),
        rejected_rewards=floats(scores[pairs:]), loss=float(loss),
        metrics={k: float(v) for k, v in metrics.items() if k != "num_tokens"},
    )
    if with_margin:
        case["margin"] = floats(margin)
    reward.append(case)

with open(out_path, "w") as out:
    json.dump(dict(simpo=simpo, orpo=orpo, kto=kto, reward=reward), out, indent=1)
