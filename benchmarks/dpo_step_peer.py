# dpo_step_peer.py: the peer of dpo_step_benchmark: the same DPO training step in PyTorch eager
# transformers (fp32 master weights under bf16 autocast on CUDA, as a TRL DPOTrainer step runs;
# float32 on the CPU), with random weights and tokens; each pair's rejected row repeats its chosen
# row's first half (the prompt), and TRL computes it twice, as here. MODE (5th argument, "+"-joined):
# "compile" (torch.compile), "lora" (PEFT LoRA r 16, alpha 32, all-linear; the reference is the
# same model under disable_adapter(), as TRL does with a PeftModel). Prints one JSON line.
import json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
from benchmark_models import SHAPES, build_llama

name = sys.argv[1] if len(sys.argv) > 1 else "tiny"
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 512
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 5
modes = set(sys.argv[5].split("+")) if len(sys.argv) > 5 and sys.argv[5] not in ("", "none") else set()
unknown = modes - {"compile", "lora"}
if unknown:
    sys.exit(f"MODE must be compile, lora or lora+compile, not {sys.argv[5]}")
compile_model = "compile" in modes
lora = "lora" in modes
vocab = SHAPES[name][5]
cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
torch.manual_seed(0)
policy = build_llama(name, device)
if lora:
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(policy, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    reference = None
else:
    reference = build_llama(name, device).eval()
    reference.requires_grad_(False)
if compile_model:
    policy = torch.compile(policy)
    reference = torch.compile(reference) if reference is not None else None
optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
ids = torch.randint(vocab, (2 * pairs, tokens), device=device)
ids[pairs:, : tokens // 2] = ids[:pairs, : tokens // 2]  # the pairs' shared prompts
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
            if reference is None:
                with policy.disable_adapter():
                    ref = logps(policy, ids, mask)
            else:
                ref = logps(reference, ids, mask)
        pol = logps(policy, ids, mask)
        margin = (pol[:pairs] - ref[:pairs]) - (pol[pairs:] - ref[pairs:])
        loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda: torch.cuda.synchronize()
    if step >= 0: seconds += time.perf_counter() - start
    loss_value = loss.item()
peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
print(json.dumps({"impl": "transformers" + ("+peft-lora" if lora else "") + ("+compile" if compile_model else ""), "shape": name, "device": device,
                  "pairs": pairs, "tokens": tokens, "steps": steps,
                  "tokens_per_second": round(steps * 2 * pairs * tokens / seconds, 1), "peak_gib": round(peak, 2),
                  "loss": round(loss_value, 5)}))
