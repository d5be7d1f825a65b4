"""optimizer_reference.py: the PyTorch and transformers results n3rlhf's optimizer pieces must
reproduce: torch.optim.AdamW (default single-tensor path and fused=True) with two parameter
groups, clip_grad_norm_ before each step and a linear warmup schedule from transformers, over a
few steps on random tensors; and the multipliers of transformers' warmup schedules. Writes JSON
(float32 values as exact doubles) for algos_optimizer_peer_test.

Usage: python optimizer_reference.py OUT_JSON
"""
import json
import math
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")

import torch
from transformers import TrainingArguments
from transformers.optimization import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)


def floats(tensor):
    return [float(x) for x in tensor.detach().double().reshape(-1).tolist()]


torch.manual_seed(1234)
shapes = [[7, 5], [5], [3, 4, 2], [6]]
decay_of_group = [0.01, 0.0]
group_of_param = [0, 1, 0, 1]
initial = [torch.randn(shape) for shape in shapes]
steps = 4
# Large gradients in some steps so that clipping (max_norm 1.0) bites, small in others so it doesn't.
gradient_scales = [3.0, 0.05, 1.0, 0.2]
grads = [[torch.randn(shape) * scale for shape in shapes] for scale in gradient_scales]
max_norm = 1.0
base_lr = 1e-2
warmup, total = 2, 6


def run(fused):
    params = [p.clone().requires_grad_(True) for p in initial]
    groups = [
        dict(params=[p for p, g in zip(params, group_of_param) if g == index], weight_decay=decay)
        for index, decay in enumerate(decay_of_group)
    ]
    optimizer = torch.optim.AdamW(groups, lr=base_lr, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    schedule = get_linear_schedule_with_warmup(optimizer, warmup, total)
    norms, lrs = [], []
    for step in range(steps):
        for p, g in zip(params, grads[step]):
            p.grad = g.clone()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)))
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    state = [optimizer.state[p] for p in params]
    return dict(
        norms=norms, lrs=lrs, params=[floats(p) for p in params],
        exp_avg=[floats(s["exp_avg"]) for s in state], exp_avg_sq=[floats(s["exp_avg_sq"]) for s in state],
        step=[float(s["step"]) for s in state],
    )


schedules = []
optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
for kind, make, total_steps, warmup_steps in (
    ("constant", lambda o, w, t: get_constant_schedule_with_warmup(o, w), 10, 3),
    ("linear", get_linear_schedule_with_warmup, 10, 3),
    ("linear", get_linear_schedule_with_warmup, 7, 0),
    ("cosine", get_cosine_schedule_with_warmup, 11, 2),
    ("cosine", get_cosine_schedule_with_warmup, 100, 0),
):
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = 1.0
    scheduler = make(optimizer, warmup_steps, total_steps)
    multipliers = [scheduler.lr_lambdas[0](step) for step in range(total_steps + 2)]
    schedules.append(dict(kind=kind, total_steps=total_steps, warmup_steps=warmup_steps, multipliers=multipliers))

with tempfile.TemporaryDirectory() as scratch:
    warmups = [
        dict(total_steps=total_steps, warmup_ratio=ratio,
             warmup_steps=TrainingArguments(output_dir=scratch, warmup_steps=ratio).get_warmup_steps(total_steps))
        for total_steps, ratio in ((95, 0.1), (10, 0.25), (7, 0.0), (3, 0.5))
    ]

json.dump(
    dict(
        shapes=shapes, group_of_param=group_of_param, weight_decay=decay_of_group, base_lr=base_lr, warmup=warmup,
        total=total, max_norm=max_norm, initial=[floats(p) for p in initial],
        grads=[[floats(g) for g in step] for step in grads],
        single_tensor=run(fused=False), fused=run(fused=True), schedules=schedules, warmups=warmups,
    ),
    open(sys.argv[1], "w"),
)
