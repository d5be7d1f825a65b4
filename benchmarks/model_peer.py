# model_peer.py: the peer of model_benchmark: the same forward, forward+backward and greedy
# generation in PyTorch eager transformers (sdpa attention, float32, CPU), same shape, batch and
# threads. Prints one JSON line.
# Usage: model_peer.py SHAPE forward|train|generate BATCH TOKENS STEPS THREADS
import json, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
from benchmark_models import SHAPES, build_llama

name, mode = sys.argv[1], sys.argv[2]
batch, tokens, steps, threads = (int(value) for value in sys.argv[3:7])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_llama(name)
ids = torch.randint(SHAPES[name][5], (batch, tokens))

if mode in ("forward", "train"):
    seconds = cpu_seconds = 0.0
    for step in range(-1, steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        if mode == "train":
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(input_ids=ids).logits.sum().item()
        if step >= 0:
            seconds += time.perf_counter() - start
            cpu_seconds += time.process_time() - cpu_start
    unit, value, cpu_value = "tokens_per_second", steps * batch * tokens / seconds, steps * batch * tokens / cpu_seconds
elif mode == "generate":
    new_tokens = 32
    def timed_generate(count):
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=count,
                           min_new_tokens=count, do_sample=False, use_cache=True, eos_token_id=None,
                           pad_token_id=0)
        return time.perf_counter() - start, time.process_time() - cpu_start
    timed_generate(2)
    prefill = total = cpu_prefill = cpu_total = 0.0
    for _ in range(steps):
        wall, cpu = timed_generate(1)
        prefill, cpu_prefill = prefill + wall, cpu_prefill + cpu
        wall, cpu = timed_generate(1 + new_tokens)
        total, cpu_total = total + wall, cpu_total + cpu
    unit = "ms_per_token"
    value = 1000.0 * (total - prefill) / (steps * new_tokens)
    cpu_value = 1000.0 * (cpu_total - cpu_prefill) / (steps * new_tokens)
else:
    sys.exit(f"unknown mode {mode}")
print(json.dumps({"impl": "transformers", "shape": name, "mode": mode, "batch": batch, "tokens": tokens,
                  "threads": threads, unit: round(value, 3), "cpu_" + unit: round(cpu_value, 3)}))
