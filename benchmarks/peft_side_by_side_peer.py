# peft_side_by_side_peer.py: DPO with adapters, n3rlhf-dist against pip TRL + PEFT on this machine
# (benchmarks/peft_side_by_side.sh is the command).
#
#   peft_side_by_side_peer.py drive ...   every run back to back, measured the same way, and the report
#   peft_side_by_side_peer.py trl ...     (internal) one TRL DPOTrainer run writing a step log
#
# The runs, all on 1 process, the same model (n3rlhf init-model --seed 0 with the demo tokenizer),
# data (n3rlhf demo-data --seed 0), data order, batch, max_length, learning rate and beta:
#   n3rlhf full        full fine-tuning; the reference is a frozen copy of the base
#   n3rlhf LoRA        peft { method "lora" r alpha dropout 0 target_modules "all-linear" }; the
#                      reference is the policy with its adapters off (no second model)
#   n3rlhf QLoRA       the same adapters over an NF4 base (block 64, double quantization)
#   n3rlhf LoRA+copy   LoRA with reference_model set to the base directory: a second, frozen copy
#   TRL full           DPOTrainer, no PEFT: TRL loads the reference copy itself
#   TRL+PEFT LoRA      DPOTrainer(peft_config=LoraConfig(same r, alpha, targets, dropout 0))
#   TRL+PEFT QLoRA     the model loaded with BitsAndBytesConfig(load_in_4bit, nf4, double quant) on the CPU
#
# Same data order: n3rlhf-dist shuffles its training examples with a seeded SplitMix64
# (src/io/batching.cpp: SeededRandom, seeded_shuffle, epoch_seed); with group_by_length false and
# eval_fraction 0 epoch e is a Fisher-Yates shuffle of 0..N-1 seeded by epoch_seed(seed, e, 1), cut
# into consecutive batches. `n3rlhf_order` reproduces it; TRL gets its rows in that order with a
# sequential sampler. Step 1's logps/chosen (policy = base in every run) shows the batches agree.
#
# Same settings: fp32 everywhere (DPOConfig's default bf16=True is turned off), no gradient
# checkpointing on either side (DPOConfig defaults gradient_checkpointing=True; n3rlhf's
# peft.use_gradient_checkpointing is false), constant learning rate without warm-up, sigmoid loss,
# keep_start truncation (n3rlhf's max_prompt_length = max_length - 1, TRL 1.16 has none), dropout 0.
# TRL casts the LoRA weights of a quantized model to bfloat16 (dpo_trainer.py, "When using QLoRA");
# they are cast back to float32 here, as n3rlhf keeps them, unless --trl-qlora-bf16-adapters.
#
# Same tokens: the real (non-padding) tokens of the chosen and rejected rows of each step. n3rlhf
# counts CollatedBatch::real_tokens; here the counts come from the reconstructed batches with TRL's
# tokenization, and the TRL side counts attention_mask.sum() of each training batch (printed: the two agree).
#
# Same timing: each run writes one record per optimizer step at its end (n3rlhf
# <output.dir>/logs/metrics.jsonl with logging.log_interval 1; TRL a TrainerCallback). Rates are the
# tokens of steps 2..N over the wall time from the end of step 1 to the end of step N (step 1 is the
# warm-up; start-up, loading and the final save are outside). Also shown: n3rlhf's own per-step
# timer (metrics.jsonl tokens_per_second), TRL's on_step_begin..on_step_end, the median step.
# CPU rates use the user+sys seconds of the run's process tree over the same window, sampled from
# /proc (psutil) by this driver when each step record appears, identically for every run.
#
# Same memory measure: peak resident set. "process peak" is /usr/bin/time's %M (wait4 ru_maxrss);
# "training peak" is VmHWM when step N-1's record appeared (before n3rlhf writes its last checkpoint
# and output); "RSS in training" is VmRSS then (what the process holds while it trains, after the
# loading transients).
#
# The machine is shared: every measured run holds `flock /tmp/n3rlhf-bench.lock` (N3RLHF_BENCH_LOCK;
# other benchmarks take the same lock), then waits, holding it, until other processes use under
# --quiet-below cores (a 2-thread run beside a compiler slows by 5-40x: its OpenMP threads spin),
# runs strictly after the previous one, and is repeated (--tries) when others used more than
# --max-others cores during its window. The load average when the run started and at its end, and the CPU that other
# processes used during the window, are printed beside each run.
#
#   peft_side_by_side_peer.py load-memory --model DIR --method full|qlora
# prints what transformers' from_pretrained leaves resident (anonymous / file-backed) for the fp32
# model and for the bitsandbytes NF4 one, which explains TRL + PEFT QLoRA's memory on the CPU.
#
# The TRL run, the step log, the lock, the contention measures, the process-tree sampling and the
# rates are shared with trl_side_by_side_peer.py: benchmarks/trl_peer_common.py (n3rlhf's data
# order: benchmarks/n3rlhf_data_order.py).
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import trl_peer_common as common  # noqa: E402
from trl_peer_common import LOCK, PRESETS  # noqa: E402


# ----------------------------------------------------------------------------------------------
# The TRL side (one process per run)

def run_trl(a):
    torch, train, tokenizer = common.trl_run_inputs(a)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    load = {"dtype": torch.float32}
    if a.method == "qlora":
        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
        load["device_map"] = "cpu"
    model = AutoModelForCausalLM.from_pretrained(a.model, **load)
    peft_config = None
    if a.method in ("lora", "qlora"):
        from peft import LoraConfig

        targets = a.targets if a.targets == "all-linear" else a.targets.split(",")
        peft_config = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=targets, bias="none",
                                 task_type="CAUSAL_LM")
    config = common.dpo_config(a, weight_decay=0.0, max_grad_norm=1.0)

    captured = {}
    Trainer = common.capturing_dpo_trainer(captured, ("logps/chosen", "logps/rejected", "rewards/margins"), "rows")
    # One record per step, written at its end, with the wall time at its begin.
    log = common.step_log(a.step_log, captured, with_logs=False)
    trainer = Trainer(model=model, args=config, train_dataset=train, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=[log])
    if a.method == "qlora" and not a.bf16_adapters:
        for _name, p in trainer.model.named_parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.to(torch.float32)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    dtypes = sorted({str(p.dtype) for p in trainer.model.parameters() if p.requires_grad})
    info = {"trainable_parameters": trainable, "trainable_dtypes": dtypes,
            "reference": "a second model" if trainer.ref_model is not None else "adapters disabled",
            "threads": torch.get_num_threads()}
    if a.method == "qlora":
        import bitsandbytes as bnb

        layer = next(m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit))
        qs = layer.weight.quant_state
        info["base_linear"] = f"{type(layer).__name__} quant_type={qs.quant_type} blocksize={qs.blocksize} " \
                              f"nested={qs.nested} storage={layer.weight.dtype}"
    with open(a.step_log + ".info.json", "w") as f:
        json.dump(info, f)
    trainer.train()
    log.close()


def load_memory(a):
    """What transformers' from_pretrained leaves resident for the fp32 model and for the bitsandbytes
    NF4 one on the CPU (RSS, anonymous, file-backed), before any training."""
    import ctypes
    import gc

    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.set_num_threads(a.threads or os.cpu_count())

    def memory():
        with open("/proc/self/status") as f:
            d = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in f
                 if line.startswith(("VmHWM", "VmRSS", "RssAnon", "RssFile"))}
        return f"RSS {d['VmRSS']} MiB (anonymous {d['RssAnon']}, file-backed {d['RssFile']}), peak {d['VmHWM']} MiB"

    print(f"after imports: {memory()}")
    load = {"dtype": torch.float32}
    if a.method == "qlora":
        load["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                         bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
        load["device_map"] = "cpu"
    model = AutoModelForCausalLM.from_pretrained(a.model, **load)
    print(f"after from_pretrained ({a.method}): {memory()}")
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(f"after gc + malloc_trim: {memory()}")
    held = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    print(f"parameters + buffers: {held / 2**20:.1f} MiB")


# ----------------------------------------------------------------------------------------------
# Measurement

def gate(a):
    """Runs inside the lock: waits up to --quiet-wait seconds until other processes use under
    --quiet-below cores over 2 s, writes the load average and that use to --stamp, execs the run."""
    used = common.wait_for_quiet(a.quiet_wait, a.quiet_below)
    with open(a.stamp, "w") as f:
        json.dump({"load": common.load_averages(), "others_before": used, "time": time.time()}, f)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    os.execvp(command[0], command)


def run_measured(command, env, step_file, tag, work, quiet_wait=60.0, quiet_below=0.2, poll=0.02):
    """Runs `command` under the benchmark lock and /usr/bin/time; samples the tree's CPU, memory and
    the machine's busy time when each step record appears."""
    time_file = os.path.join(work, f"{tag}.time")
    lock_file = os.path.join(work, f"{tag}.locked")
    log_path = os.path.join(work, f"{tag}.log")
    for path in (time_file, lock_file):
        if os.path.exists(path):
            os.remove(path)
    # flock, then /usr/bin/time over the gate, which waits (holding the lock) until the other
    # processes leave the CPU alone, notes the load and execs the run: %M and %U/%S are the run's.
    wrapped = ["flock", LOCK, "/usr/bin/time", "-o", time_file, "-f", "%M %U %S %e",
               sys.executable, os.path.abspath(__file__), "gate", "--stamp", lock_file, "--quiet-wait", str(quiet_wait),
               "--quiet-below", str(quiet_below), "--"] + command
    requested = time.time()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(wrapped, env=env, stdout=out, stderr=subprocess.STDOUT)
    tree = common.ProcessTree(proc.pid)

    def sample():
        cpu, busy, own = tree.cpu_seconds(), common.system_busy_seconds(), time.process_time()
        hwm, rss, anon = tree.memory_kib()
        return dict(_cpu=cpu, _busy=busy, _driver_cpu=own, _hwm_kib=hwm, _rss_kib=rss, _anon_kib=anon, _seen=time.time())

    steps = common.StepRecords(step_file, sample)
    # Nothing to read before the gate has let the run start.
    status, _usage = common.follow(proc.pid, steps, poll, ready=lambda: os.path.exists(lock_file))
    code = os.waitstatus_to_exitcode(status)
    run = {"returncode": code, "records": steps.records, "log": log_path, "load_end": common.load_averages()}
    if os.path.exists(lock_file):
        with open(lock_file) as f:
            stamp = json.load(f)
        run["load_start"], run["others_before"] = stamp["load"], stamp["others_before"]
        run["wait_s"] = stamp["time"] - requested  # for the lock and for a quiet machine
    if os.path.exists(time_file):
        with open(time_file) as f:
            last = [line for line in f.read().split("\n") if line.strip()][-1].split()
        try:
            run["peak_rss_kib"], run["user_s"], run["sys_s"], run["elapsed_s"] = \
                int(last[0]), float(last[1]), float(last[2]), float(last[3])
        except (ValueError, IndexError):
            pass
    return run


def window(run, tokens_by_step):
    """Rates over steps 2..N (step 1 is the warm-up) and the memory when step N-1 ended."""
    records = {r["step"]: r for r in run["records"]}
    if 1 not in records or max(records) < 3:
        return None
    last = max(records)
    a, b = records[1], records[last]
    steps = range(2, last + 1)
    result, _driver = common.window_rates(records, tokens_by_step, "_cpu")
    tokens = result["tokens"]
    before_last = records.get(last - 1, b)
    result.update(cores=result["cpu_s"] / result["wall_s"], training_peak_kib=before_last["_hwm_kib"],
                  training_rss_kib=before_last["_rss_kib"], training_anon_kib=before_last["_anon_kib"])
    if "tokens_per_second" in b:  # n3rlhf's own per-step timer
        result["own_tokens_per_s"] = tokens / sum(tokens_by_step[s] / records[s]["tokens_per_second"] for s in steps)
    elif "begin_time" in b:  # TRL: on_step_begin .. on_step_end (the batch is fetched before on_step_begin)
        result["own_tokens_per_s"] = tokens / sum(records[s]["wall_time"] - records[s]["begin_time"] for s in steps)
        result["in_process_cpu_s"] = b["cpu_time"] - a["cpu_time"]
    return result


# ----------------------------------------------------------------------------------------------
# The driver

def job_text(name, model, data, prepared, out, a, steps, peft=None, reference=None):
    peft_block = ""
    if peft:
        targets = '"all-linear"' if a.targets == "all-linear" else "[" + ", ".join(f'"{t}"' for t in a.targets.split(",")) + "]"
        peft_block = (f'    peft: {{ method: "{peft}"  r: {a.r}  alpha: {a.alpha}  dropout: 0  target_modules: {targets}'
                      + ('  quantization_bits: 4  quantization_block_size: 64  double_quantization: true' if peft == "qlora" else "")
                      + " }\n")
    return common.job_text("benchmarks/peft_side_by_side_peer.py", name, model, data, prepared, out, a, steps, 0, 1.0,
                           a.strategy, reference, peft_block)


def nf4_bytes(numel, block=64):
    """What src/quant's QuantizedLinearWeight (and bitsandbytes) hold for one double-quantized NF4 matrix:
    packed codes, one 8-bit absmax code per block, a float32 scale per 256 blocks, the 256-entry float32
    nested code book and the float32 offset (docs/quantization.md, Memory)."""
    blocks = -(-numel // block)
    return -(-numel // 2) + blocks + 4 * -(-blocks // 256) + 256 * 4 + 4


def mib(kib):
    return kib / 1024.0


def drive(a):
    repo, bin_dir, work, cores, threads = common.driver_places(a)
    preset = PRESETS.get(a.preset, a.preset)
    report = common.Report()
    say, note = report.say, report.note

    n3rlhf = os.path.join(bin_dir, "n3rlhf")
    for binary in (n3rlhf, os.path.join(bin_dir, "n3rlhf-dist")):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: cmake --build build -j2 --target n3rlhf-dist n3rlhf")
    train_jsonl = common.demo_data(bin_dir, work)
    tokenizer_dir = os.path.join(repo, common.TOKENIZER)
    model_dir = common.init_model(bin_dir, tokenizer_dir, work, preset)

    import torch
    import transformers
    import trl
    import peft as peft_module
    import bitsandbytes
    from transformers import AutoTokenizer

    cfg, shapes = common.model_shapes(model_dir)
    params = common.parameter_count(shapes)
    linear_names = [n for n in shapes if n.startswith("model.layers.") and n.endswith("_proj.weight")]
    if a.targets != "all-linear":
        wanted = a.targets.split(",")
        linear_names = [n for n in linear_names if n.split(".")[-2] in wanted]
    linear_params = sum(math.prod(shapes[n]) for n in linear_names)
    linear_nf4 = sum(nf4_bytes(math.prod(shapes[n])) for n in linear_names)
    adapter_params = sum(a.r * (shapes[n][0] + shapes[n][1]) for n in linear_names)

    # Tokens per step of the batches n3rlhf trains on, with TRL 1.16's tokenization (EOS appended to
    # each response, BOS from the template, keep_start truncation to max_length).
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = common.read_jsonl(train_jsonl)
    tokens_by_step = common.step_tokens(len(rows), a, a.steps,
                                        lambda i: common.trl_row_tokens(tok, rows[i], a.max_length))

    say(f"DPO with adapters: n3rlhf-dist vs TRL + PEFT ({time.strftime('%Y-%m-%d %H:%M')}, {os.uname().nodename}, "
        f"{cores} cores, no GPU used)")
    say(f"model: {preset} (n3rlhf init-model --seed 0, demo tokenizer): {params / 1e6:.2f}M parameters, hidden "
        f"{cfg['hidden_size']} x {cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']}/{cfg['num_key_value_heads']} "
        f"heads, vocab {cfg['vocab_size']}; {len(linear_names)} targeted linears = {linear_params / 1e6:.2f}M parameters")
    say(f"data: {train_jsonl} ({len(rows)} pairs, demo-data --seed 0); {a.steps} steps of {a.batch_size} pairs, "
        f"max_length {a.max_length} keep_start, lr {a.learning_rate} constant, beta {a.beta} sigmoid, fp32, seed {a.seed}")
    say(f"adapters: r {a.r}, alpha {a.alpha}, dropout 0, target_modules {a.targets} ({adapter_params:,} trainable "
        f"parameters); QLoRA: NF4, block 64, double quantization")
    say(f"threads: n3rlhf-dist 1 rank ({a.strategy}), OMP_NUM_THREADS unset -> cores / ranks per node = {cores} "
        f"(set_cpu_threads_for_rank); TRL torch.set_num_threads({threads})")
    say(f"peer: trl {trl.__version__}, peft {peft_module.__version__}, transformers {transformers.__version__}, "
        f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")
    say(f"every run under `flock {LOCK}`, one after another; load = 1-minute load average when the lock was taken -> at the end")

    prepared = os.path.join(work, "prepared")
    runs, infos = {}, {}
    n3_runs = [("n3rlhf full", None, None), ("n3rlhf LoRA", "lora", None), ("n3rlhf QLoRA", "qlora", None),
               ("n3rlhf LoRA+copy", "lora", model_dir)]
    trl_runs = [("TRL full", "full"), ("TRL+PEFT LoRA", "lora"), ("TRL+PEFT QLoRA", "qlora")]
    selected = set(a.runs.split(",")) if a.runs else None

    def wanted(label):
        return selected is None or label in selected or label.split()[-1].lower() in selected

    def measure(label, tag, make, env, step_file, check_tokens):
        best = None
        for attempt in range(1, a.tries + 1):
            command = make()
            run = run_measured(command, env, step_file, tag, work, a.quiet_wait, a.quiet_below)
            if run["returncode"] != 0:
                with open(run["log"]) as f:
                    tail = f.read()[-2500:]
                return {"failed": True, "returncode": run["returncode"], "tail": tail, "log": run["log"]}
            run["window"] = window(run, tokens_by_step)
            run["attempt"] = attempt
            w = run["window"]
            note(f"  {label} try {attempt}: " + (f"{w['tokens_per_s']:,.0f} tok/s, others' CPU {w['others_cores']:.2f} cores, "
                                                if w else "no window, ")
                 + f"load {run.get('load_start', [0])[0]:.2f} -> {run['load_end'][0]:.2f}")
            best = common.less_disturbed(best, run)
            if w and w["others_cores"] <= a.max_others:
                break
        best["contended"] = best["window"] is None or best["window"]["others_cores"] > a.max_others
        if check_tokens:
            counted = {r["step"]: r["tokens"] for r in best["records"] if "tokens" in r}
            best["token_mismatch"] = [s for s in counted if counted[s] != tokens_by_step[s]]
        return best

    # n3rlhf
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    for label, method, reference in n3_runs:
        if not wanted(label):
            continue
        tag = label.replace("n3rlhf ", "n3-").replace("+", "-").replace(" ", "-").lower()
        out = os.path.join(work, "out", tag)
        job = os.path.join(work, f"{tag}.n3")
        with open(job, "w") as f:
            f.write(job_text("PeftSideBySide", model_dir, train_jsonl, prepared, out, a, a.steps, method, reference))
        subprocess.run([n3rlhf, "prepare", job], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def make(out=out, job=job):
            shutil.rmtree(out, ignore_errors=True)
            return [os.path.join(bin_dir, "n3rlhf-dist"), job]

        runs[label] = measure(label, tag, make, env, os.path.join(out, "logs", "metrics.jsonl"), False)
        if not runs[label].get("failed"):
            with open(runs[label]["log"]) as f:
                text = f.read()
            for line in text.split("\n"):
                if "trainable parameters" in line or "parameters" in line and "training \"" in line:
                    infos.setdefault(label, []).append(line.split("] ", 3)[-1].strip())

    # TRL
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for label, method in trl_runs:
        if not wanted(label):
            continue
        tag = "trl-" + method
        step_log = os.path.join(work, f"{tag}-steps.jsonl")
        command = [sys.executable, os.path.abspath(__file__), "trl", "--model", model_dir, "--data", train_jsonl,
                   "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--learning-rate", str(a.learning_rate),
                   "--beta", str(a.beta), "--max-length", str(a.max_length), "--threads", str(threads),
                   "--seed", str(a.seed), "--method", method, "--r", str(a.r), "--alpha", str(a.alpha),
                   "--targets", a.targets, "--step-log", step_log, "--out", os.path.join(work, "out", tag)]
        if a.trl_qlora_bf16_adapters:
            command.append("--bf16-adapters")

        def make(step_log=step_log, command=command):
            for path in (step_log, step_log + ".info.json"):
                if os.path.exists(path):
                    os.remove(path)
            return command

        runs[label] = measure(label, tag, make, env, step_log, True)
        if os.path.exists(step_log + ".info.json"):
            with open(step_log + ".info.json") as f:
                infos[label] = json.load(f)

    # The table
    say()
    say(f"throughput over steps 2..{a.steps} (step 1 = warm-up; loading and the final save excluded) and resident memory")
    head = (f"  {'run':17s} {'tok/s':>7s} {'median':>7s} {'own':>7s} {'tok/CPU-s':>9s} {'cores':>5s}  {'peak':>9s} "
            f"{'train peak':>10s} {'RSS train':>9s} {'anon':>6s}  {'user+sys':>8s}  {'others':>6s}  {'load':>11s}")
    say(head)
    say(f"  {'':17s} {'wall':>7s} {'step':>7s} {'timer':>7s} {'':>9s} {'':>5s}  {'MiB (%M)':>9s} {'MiB':>10s} {'MiB':>9s} {'MiB':>6s}  "
        f"{'s':>8s}  {'cores':>6s}")
    for label, run in runs.items():
        if run.get("failed"):
            say(f"  {label:17s} FAILED (exit {run['returncode']}): see below")
            continue
        w = run["window"]
        say(f"  {label:17s} {w['tokens_per_s']:7,.0f} {w['median_step_tokens_per_s']:7,.0f} {w.get('own_tokens_per_s', float('nan')):7,.0f} "
            f"{w['tokens_per_cpu_s']:9,.0f} {w['cores']:5.2f}  {mib(run.get('peak_rss_kib', 0)):9,.0f} "
            f"{mib(w['training_peak_kib']):10,.0f} {mib(w['training_rss_kib']):9,.0f} {mib(w['training_anon_kib']):6,.0f}  "
            f"{run.get('user_s', 0) + run.get('sys_s', 0):8.1f}  {w['others_cores']:6.2f}  "
            f"{run.get('load_start', [float('nan')])[0]:4.2f} -> {run['load_end'][0]:4.2f}"
            + (f"  try {run['attempt']}" if a.tries > 1 else "") + ("  CONTENDED" if run["contended"] else ""))
    say("  tok/s wall: tokens of steps 2..N / wall time from the end of step 1 to the end of step N; median step: the")
    say("  median of the per-step rates; own timer: n3rlhf's metrics.jsonl tokens_per_second (step start to end,")
    say("  batch loading included), TRL's on_step_begin..on_step_end (batch fetched before); tok/CPU-s: the same")
    say("  tokens over the process tree's user+sys seconds in the window; peak: /usr/bin/time %M of the whole run;")
    say("  train peak / RSS train / anon: VmHWM / VmRSS / RssAnon (RSS less file-backed pages such as a mapped")
    say("  checkpoint) when step N-1 ended; user+sys: /usr/bin/time of the whole run;")
    say("  others: CPU used by other processes on the machine during the window (cores)")

    def ok(label):
        return label in runs and not runs[label].get("failed")

    def w(label):
        return runs[label]["window"]

    # Checks: same batches, same tokens, same trainable parameters
    say()
    say("checks")
    step1 = {label: next((r for r in run["records"] if r["step"] == 1), {}) for label, run in runs.items() if not run.get("failed")}
    for label, r in step1.items():
        say(f"  step 1 {label:17s} logps/chosen {r.get('logps/chosen', float('nan')):11.5f}  logps/rejected "
            f"{r.get('logps/rejected', float('nan')):11.5f}  loss {r.get('loss', float('nan')):.6f}")
    for label, run in runs.items():
        if "token_mismatch" in run:
            bad = run["token_mismatch"]
            say(f"  {label}: attention_mask tokens equal the reconstructed n3rlhf batches' at "
                f"{a.steps - len(bad)}/{a.steps} steps" + (f" (differ at {bad})" if bad else ""))
    for label, info in infos.items():
        if isinstance(info, dict):
            say(f"  {label}: {info['trainable_parameters']:,} trainable ({', '.join(info['trainable_dtypes'])}), reference "
                f"{info['reference']}, {info['threads']} threads" + (f"; {info['base_linear']}" if "base_linear" in info else ""))
        else:
            for line in info:
                say(f"  {label}: {line}")
    say(f"  tokens in steps 2..{a.steps}: {sum(tokens_by_step[s] for s in range(2, a.steps + 1)):,} "
        f"({sum(tokens_by_step.values()) / a.steps / (2 * a.batch_size):.1f} real tokens per row on average)")

    # Ratios
    say()
    say("ratios")
    ratios = {}

    def ratio_line(name, x, y, what="speed and memory"):
        if not (ok(x) and ok(y)):
            say(f"  {name}: n/a ({x if not ok(x) else y} did not run)")
            return
        wx, wy = w(x), w(y)
        r = {"tokens_per_s": wx["tokens_per_s"] / wy["tokens_per_s"],
             "median_step": wx["median_step_tokens_per_s"] / wy["median_step_tokens_per_s"],
             "tokens_per_cpu_s": wx["tokens_per_cpu_s"] / wy["tokens_per_cpu_s"],
             "peak": runs[x]["peak_rss_kib"] / runs[y]["peak_rss_kib"],
             "training_peak": wx["training_peak_kib"] / wy["training_peak_kib"],
             "training_rss": wx["training_rss_kib"] / wy["training_rss_kib"],
             "training_anon": wx["training_anon_kib"] / wy["training_anon_kib"]}
        ratios[name] = r
        say(f"  {name}: {r['tokens_per_s']:.2f}x tokens/s wall (median step {r['median_step']:.2f}x, per CPU-second "
            f"{r['tokens_per_cpu_s']:.2f}x); memory {r['peak']:.2f}x peak, {r['training_peak']:.2f}x training peak, "
            f"{r['training_rss']:.2f}x RSS in training ({r['training_anon']:.2f}x anonymous)")

    ratio_line("n3rlhf LoRA / n3rlhf full", "n3rlhf LoRA", "n3rlhf full")
    ratio_line("n3rlhf LoRA / TRL+PEFT LoRA", "n3rlhf LoRA", "TRL+PEFT LoRA")
    ratio_line("n3rlhf QLoRA / TRL+PEFT QLoRA", "n3rlhf QLoRA", "TRL+PEFT QLoRA")
    ratio_line("n3rlhf full / TRL full", "n3rlhf full", "TRL full")
    ratio_line("TRL+PEFT LoRA / TRL full", "TRL+PEFT LoRA", "TRL full")
    ratio_line("n3rlhf QLoRA / n3rlhf LoRA", "n3rlhf QLoRA", "n3rlhf LoRA")

    expected_qlora = linear_params * 4 - linear_nf4
    say()
    say("memory against the expected sizes (MiB; difference of the two runs, each measure)")
    fp32_mib = params * 4 / 2**20
    memo = {}
    for name, x, y, expected, why in [
            ("QLoRA saves (LoRA - QLoRA)", "n3rlhf LoRA", "n3rlhf QLoRA", expected_qlora / 2**20,
             f"{linear_params:,} base linear parameters x (4 - {linear_nf4 / linear_params:.4f}) bytes; NF4 base "
             f"{linear_nf4 / 2**20:.1f} MiB = {linear_nf4 / linear_params:.4f} byte/parameter"),
            ("frozen copy costs (LoRA+copy - LoRA)", "n3rlhf LoRA+copy", "n3rlhf LoRA", fp32_mib,
             f"{params:,} parameters x 4 bytes"),
            ("TRL QLoRA saves (TRL LoRA - TRL QLoRA)", "TRL+PEFT LoRA", "TRL+PEFT QLoRA", expected_qlora / 2**20,
             "the same NF4 base"),
            ("full fine-tuning costs (full - LoRA)", "n3rlhf full", "n3rlhf LoRA", 4 * fp32_mib,
             "gradients + AdamW m and v + the frozen reference copy: 4 x parameters x 4 bytes (activations aside)")]:
        if not (ok(x) and ok(y)):
            say(f"  {name}: n/a")
            continue
        d_peak = mib(runs[x]["peak_rss_kib"] - runs[y]["peak_rss_kib"])
        d_train_peak = mib(w(x)["training_peak_kib"] - w(y)["training_peak_kib"])
        d_rss = mib(w(x)["training_rss_kib"] - w(y)["training_rss_kib"])
        d_anon = mib(w(x)["training_anon_kib"] - w(y)["training_anon_kib"])
        memo[name] = {"peak": d_peak, "training_peak": d_train_peak, "training_rss": d_rss, "training_anon": d_anon,
                      "expected": expected}
        say(f"  {name}: peak {d_peak:+,.0f}, training peak {d_train_peak:+,.0f}, RSS in training {d_rss:+,.0f} "
            f"(anonymous {d_anon:+,.0f}); "
            f"expected {expected:,.0f} ({why})")

    failures = {label: run for label, run in runs.items() if run.get("failed")}
    for label, run in failures.items():
        say()
        say(f"{label} failed (exit {run['returncode']}, log {run['log']}); its last lines:")
        for line in run["tail"].strip().split("\n")[-12:]:
            say("    " + line[:300])

    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": cores, "preset": preset, "parameters": params,
               "linear_parameters": linear_params, "linear_nf4_bytes": linear_nf4, "steps": a.steps,
               "batch_size": a.batch_size, "max_length": a.max_length, "ratios": ratios, "memory": memo,
               "infos": infos, "tokens_by_step": tokens_by_step,
               "runs": {label: {k: v for k, v in run.items() if k != "records"} for label, run in runs.items()},
               "records": {label: run.get("records", []) for label, run in runs.items()}}
    report.save(work, summary, f"job files and run logs in {work}")


def main():
    parser, sub, options = common.command_line(learning_rate=1e-4, max_length=128)
    options.add_argument("--r", type=int, default=16)
    options.add_argument("--alpha", type=float, default=32)
    options.add_argument("--targets", default="all-linear", help='"all-linear" or a comma list (q_proj,k_proj,v_proj,o_proj)')

    t = common.trl_subcommand(sub, options)
    t.add_argument("--method", choices=["full", "lora", "qlora"], required=True)
    t.add_argument("--bf16-adapters", action="store_true", help="keep TRL's bfloat16 cast of QLoRA adapters")

    d = sub.add_parser("drive", parents=[options])
    d.add_argument("--bin", default="build/bin")
    d.add_argument("--work", default="/tmp/n3rlhf-peft-side-by-side")
    d.add_argument("--preset", default="llama-100m", help="init-model preset: llama-100m (100m), tiny-llama (tiny), ...")
    d.add_argument("--steps", type=int, default=10)
    d.add_argument("--runs", default="", help="comma list of run labels or their last words (full,lora,qlora,lora+copy); default all")
    d.add_argument("--strategy", default="zero2", help="n3rlhf-dist distributed.strategy (1 rank: zero2 or ddp)")
    d.add_argument("--tries", type=int, default=2, help="attempts per run while others use the CPU")
    d.add_argument("--max-others", type=float, default=0.3, help="others' CPU (cores) above which a run is retried")
    d.add_argument("--quiet-wait", type=float, default=300,
                   help="seconds each run waits (holding the lock) for other processes to leave the CPU")
    d.add_argument("--quiet-below", type=float, default=0.2, help="others' CPU (cores) that counts as quiet")
    d.add_argument("--trl-qlora-bf16-adapters", action="store_true",
                   help="leave TRL's QLoRA adapters in bfloat16 (TRL's default) instead of float32 like n3rlhf's")
    m = sub.add_parser("load-memory", help="RSS after transformers loads the model (full = fp32, qlora = bnb NF4)")
    m.add_argument("--model", required=True)
    m.add_argument("--method", choices=["full", "qlora"], required=True)
    m.add_argument("--threads", type=int, default=0)
    g = sub.add_parser("gate")
    g.add_argument("--stamp", required=True)
    g.add_argument("--quiet-wait", type=float, default=60)
    g.add_argument("--quiet-below", type=float, default=0.2)
    g.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.mode == "gate":
        gate(args)
    elif args.mode == "load-memory":
        load_memory(args)
    elif args.mode == "trl":
        run_trl(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
