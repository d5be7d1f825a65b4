# dpo_step_peer.py: the peer of dpo_step_benchmark: the same DPO training step in PyTorch eager
# transformers (fp32 master weights under bf16 autocast on CUDA, as a TRL DPOTrainer step runs;
# float32 on the CPU), with random weights and tokens. Prints one JSON line.
import json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
from benchmark_models import SHAPES, build_llama

name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 512
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
compile_model = len(sys.argv) > 5 and sys.argv[5] == "compile"
vocab = SHAPES[name][5]
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
torch.manual_seed(0)
policy = build_llama(name, device)
reference = build_llama(name, device).eval()
reference.requires_grad_(False)
if compile_model:
    policy = torch.compile(policy)
    reference = torch.compile(reference)
optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
ids = torch.randint(vocab, (2 * pairs, tokens), device=device)
mask = torch.ones(2 * pairs, tokens, device=device)
mask[:, : tokens // 2] = 0

def logps(model, ids, mask):
    logits = model(input_ids=ids).logits[:, :-1].float()
    token = torch.gather(logits.log_softmax(-1), 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (token * mask[:, 1:]).sum(-1)

autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else torch.autocast(device_type="cpu", enabled=False)
seconds, loss_value = 0.0, 0.0
for step in range(-2, steps):
    if cuda: torch.cuda.synchronize()
    start = time.perf_counter()
    with autocast:
        with torch.no_grad():
            ref = logps(reference, ids, mask)
        pol = logps(policy, ids, mask)
        margin = (pol[:pairs] - ref[:pairs]) - (pol[pairs:] - ref[pairs:])
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda: torch.cuda.synchronize()
    if step >= 0: seconds += time.perf_counter() - start
    loss_value = loss.item()
peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
print(json.dumps({"impl": "transformers" + ("+compile" if compile_model else ""), "shape": name, "device": device,
                  "pairs": pairs, "tokens": tokens, "steps": steps,
                  "tokens_per_second": round(steps * 2 * pairs * tokens / seconds, 1), "peak_gib": round(peak, 2),
                  "loss": round(loss_value, 5)}))
