# trl_side_by_side_peer.py: n3rlhf-dist and pip TRL's DPOTrainer on the same model, data and
# hyper-parameters, back to back on this machine (benchmarks/trl_side_by_side.sh is the command).
#
#   trl_side_by_side_peer.py drive ...   run both for each model, measure, print the comparison
#   trl_side_by_side_peer.py trl ...     (internal) one TRL DPOTrainer run writing a step log
#
# Same data order: n3rlhf-dist always shuffles its training examples (seeded SplitMix64, the same
# on every platform; src/io/batching.cpp) and has no switch to turn that off. With
# data.group_by_length false and data.eval_fraction 0, epoch e's order is a Fisher-Yates shuffle
# of 0..N-1 seeded by epoch_seed(seed, e, 1), cut into consecutive global batches (the last
# partial one dropped). `n3rlhf_order` below reproduces it, the TRL data set is written in that
# order, and TRL reads it with train_sampling_strategy="sequential" (a SequentialSampler): both see
# the same 8 pairs at every step. Step 1's log-probs confirm it (a different batch would differ by
# whole nats).
#
# Same numbers: fp32 on both sides (DPOConfig defaults to bf16=True, which on the CPU autocasts to
# bfloat16: it is set False), constant learning rate, no warm-up, beta 0.1, sigmoid loss,
# max_length 64 with keep_start truncation (TRL 1.16 has no max_prompt_length; n3rlhf's is set to
# max_length - 1, which drops the same rows as TRL's "prompt fills max_length" filter), AdamW
# betas/eps/weight decay and max_grad_norm equal, dropout 0 (the configs have 0; TRL disables it
# anyway).
#
# Same tokens: n3rlhf counts the real (non-padding) tokens of the chosen and rejected rows of a
# step (CollatedBatch::real_tokens, src/io/batching.cpp; summed over micro batches and ranks in
# src/runtime/trainer.cpp); the TRL side counts attention_mask.sum() of each training batch, which
# is the same set of tokens (prompt + response + EOS, BOS included, no padding).
#
# Same timing: both processes write one record per optimizer step with the wall time at its end
# (n3rlhf: <output.dir>/logs/metrics.jsonl with logging.log_interval 1; TRL: a TrainerCallback).
# The rate is tokens of steps 2..N over the wall time from the end of step 1 to the end of step N
# (step 1 is the warm-up and start-up is excluded). CPU rates use the CPU seconds of the process
# tree over the same window, sampled from /proc (psutil) by this driver when each step record
# appears, identically for both. Memory: "training peak" is the largest VmHWM of the run's
# processes when step N-1's record appears (n3rlhf writes a checkpoint and the model after step
# N); "process peak" is wait4()'s ru_maxrss (what /usr/bin/time %M prints), with mpirun that of
# the largest rank. Runs never overlap: each holds flock LOCK (shared with the other benchmarks),
# waits for the machine to be quiet, and is repeated while other processes used more than
# --max-others cores during its window (or the load average ended above --max-load after a
# window of 30 s or more).
import argparse
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import time

# Benchmarks on this shared machine take this lock for each measured run (peft_side_by_side and
# the model and sharding benchmarks with N3RLHF_BENCH_LOCK do too), so that they never overlap.
LOCK = os.environ.get("N3RLHF_BENCH_LOCK", "/tmp/n3rlhf-bench.lock")


# ----------------------------------------------------------------------------------------------
# n3rlhf's data order: benchmarks/n3rlhf_data_order.py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from n3rlhf_data_order import n3rlhf_order  # noqa: E402


# ----------------------------------------------------------------------------------------------
# The TRL side

def run_trl(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    with open(args.data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    order = n3rlhf_order(len(rows), args.seed, args.batch_size, args.steps)
    train = Dataset.from_list([{k: rows[i][k] for k in ("prompt", "chosen", "rejected")} for i in order])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    config = DPOConfig(
        output_dir=args.out, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        learning_rate=args.learning_rate, lr_scheduler_type="constant", warmup_steps=0, max_steps=args.steps,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, beta=args.beta, loss_type=["sigmoid"], max_length=args.max_length,
        # DPOConfig defaults gradient_checkpointing=True in TRL 1.16: off, as n3rlhf recomputes nothing.
        gradient_checkpointing=False,
        truncation_mode="keep_start", bf16=False, fp16=False, use_cpu=True, seed=args.seed,
        train_sampling_strategy="sequential", dataloader_num_workers=0, disable_dropout=True,
        logging_steps=1, save_strategy="no", report_to=[], num_train_epochs=1)

    captured = {}
    keys = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected")

    class Trainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                value = loss[0] if isinstance(loss, tuple) else loss
                captured["loss"] = value.detach().item()
                captured["tokens"] = int(inputs["attention_mask"].sum().item())
                captured["pairs"] = int(inputs["input_ids"].shape[0] // 2)
                for key in keys:
                    captured[key] = self._metrics["train"][key][-1]
            return loss

        def _clip_grad_norm(self, model):
            if self.state.global_step == 0:
                # Step 1's gradient norm in float64, against which both sides' float32 norms are read.
                with torch.no_grad():
                    squares = sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None)
                captured["grad_norm_fp64"] = math.sqrt(float(squares))
            elif "grad_norm_fp64" in captured:
                del captured["grad_norm_fp64"]
            return super()._clip_grad_norm(model)

    log = open(args.step_log, "w", encoding="utf-8")

    class StepLog(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            captured["step"] = state.global_step
            captured["wall_time"] = time.time()
            captured["cpu_time"] = time.process_time()

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs is None or "loss" not in logs or captured.get("step") != state.global_step:
                return
            record = dict(captured)
            record["grad_norm"] = float(logs.get("grad_norm", float("nan")))
            record["learning_rate"] = float(logs.get("learning_rate", float("nan")))
            log.write(json.dumps(record) + "\n")
            log.flush()

    trainer = Trainer(model=model, ref_model=reference, args=config, train_dataset=train, processing_class=tokenizer,
                      callbacks=[StepLog()])
    trainer.train()
    log.close()


# ----------------------------------------------------------------------------------------------
# Measurement

def system_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def load_average():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_for_quiet(max_wait, threshold=0.3, window=2.0):
    """Waits until the machine's other processes use under `threshold` cores over `window` seconds
    (compiles by others come and go); returns the last measured use."""
    deadline = time.time() + max_wait
    while True:
        b0, t0 = system_busy_seconds(), time.time()
        time.sleep(window)
        used = (system_busy_seconds() - b0) / (time.time() - t0)
        if used < threshold or time.time() > deadline:
            return used


class TreeCpu:
    def __init__(self, pid):
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.procs = {pid: self.root}
        self.refreshed = 0.0

    def seconds(self):
        now = time.time()
        if now - self.refreshed > 0.25:
            try:
                for child in self.root.children(recursive=True):
                    self.procs.setdefault(child.pid, child)
            except self.psutil.Error:
                pass
            self.refreshed = now
        total = 0.0
        for proc in list(self.procs.values()):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self.psutil.Error:
                pass
        return total

    def peak_rss_mib(self):
        """The largest VmHWM (peak resident set so far) of the tree's processes."""
        peak = 0
        for pid in list(self.procs):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
        return peak / 1024.0


def run_measured(command, env, step_file, log_path, poll=0.01):
    """Runs `command`, samples the process tree's CPU seconds and the machine's busy seconds when
    each new step record appears in `step_file`, returns the records and wait4's rusage."""
    started = time.time()
    load_before = load_average()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    tree = TreeCpu(proc.pid)
    records, position, pending = [], 0, ""
    status, usage = None, None

    def read_new():
        nonlocal position, pending
        if not os.path.exists(step_file):
            return
        with open(step_file, encoding="utf-8") as f:
            f.seek(position)
            chunk = f.read()
            position = f.tell()
        if not chunk:
            return
        cpu, busy, own, hwm = tree.seconds(), system_busy_seconds(), time.process_time(), tree.peak_rss_mib()
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            if "step" not in record or "loss" not in record:
                continue
            record["_tree_cpu"] = cpu
            record["_busy"] = busy
            record["_driver_cpu"] = own
            record["_peak_rss_mib"] = hwm
            records.append(record)

    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        read_new()
        if pid != 0:
            break
        time.sleep(poll)
    code = os.waitstatus_to_exitcode(status)
    return {
        "records": records,
        "returncode": code,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "process_wall_s": time.time() - started,
        "load_before": load_before,
        "load_after": load_average(),
    }


def window(run, tokens_by_step, first=1):
    """Rates over steps first+1..N (step `first` is the warm-up)."""
    records = {r["step"]: r for r in run["records"]}
    last = max(records)
    if first not in records or last <= first:
        return None
    a, b = records[first], records[last]
    tokens = sum(tokens_by_step[s] for s in range(first + 1, last + 1))
    wall = b["wall_time"] - a["wall_time"]
    cpu = b["_tree_cpu"] - a["_tree_cpu"]
    # Other processes' CPU over the window: the machine's busy time less the run's and this driver's.
    driver = b["_driver_cpu"] - a["_driver_cpu"]
    others = max(0.0, (b["_busy"] - a["_busy"]) - cpu - driver) / wall if wall > 0 else float("nan")
    # The median step, robust to a burst of someone else's work during the window.
    step_rates = sorted(tokens_by_step[s] / (records[s]["wall_time"] - records[s - 1]["wall_time"])
                        for s in range(first + 1, last + 1)
                        if s in records and s - 1 in records and records[s]["wall_time"] > records[s - 1]["wall_time"])
    median = step_rates[len(step_rates) // 2] if step_rates else float("nan")
    # Peak memory of training: VmHWM when step N-1's record appeared (n3rlhf writes a checkpoint and
    # the model after step N, TRL here saves nothing; a save's buffers are not the training's peak).
    before_last = records.get(last - 1, b)
    result = {"steps": last - first, "tokens": tokens, "wall_s": wall, "cpu_s": cpu,
              "training_peak_rss_mib": before_last["_peak_rss_mib"],
              "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu if cpu > 0 else float("nan"),
              "median_step_tokens_per_s": median, "cores_used": cpu / wall, "others_cores": others,
              "driver_cores": driver / wall if wall > 0 else float("nan")}
    if "cpu_time" in a:  # TRL's own process_time, a cross-check of the /proc sampling
        result["in_process_cpu_s"] = b["cpu_time"] - a["cpu_time"]
    return result


# ----------------------------------------------------------------------------------------------
# The driver

PRESETS = {"tiny": "tiny-llama", "100m": "llama-100m"}


def job_text(name, model, data, prepared, out, a, steps):
    return f"""# written by benchmarks/trl_side_by_side_peer.py
train rlhf "{name}" {{
    base_model: "{model}"
    algorithm: "dpo"
    dataset: "{data}"
    hyperparameters: {{
        learning_rate: {a.learning_rate}
        batch_size: {a.batch_size}
        max_steps: {steps}
        warmup_steps: 0
        lr_scheduler: "constant"
        weight_decay: {a.weight_decay}
        max_grad_norm: {a.max_grad_norm}
        adam_beta1: 0.9
        adam_beta2: 0.999
        adam_epsilon: 1e-8
        max_length: {a.max_length}
        max_prompt_length: {a.max_length - 1}
        truncation_mode: "keep_start"
        device: "cpu"
        seed: {a.seed}
    }}
    data: {{ group_by_length: false  eval_fraction: 0  prepared_dir: "{prepared}" }}
    dpo: {{ beta: {a.beta}  loss_type: "sigmoid" }}
    logging: {{ tracker: "none"  log_interval: 1  eval_interval: 0  save_interval: 0 }}
    output: {{ dir: "{out}"  keep_last_checkpoints: 1 }}
    distributed: {{ strategy: "zero2" }}
}}
"""


def sh(command):
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def contended(run, win, a):
    # Other processes' CPU over the window is the direct measure. The 1-minute load average also
    # counts, for windows long enough for it to describe them (it includes this run's own threads).
    if win is None or win["others_cores"] > a.max_others:
        return True
    return win["wall_s"] >= 30 and run["load_after"] > a.max_load


def measured_with_retries(label, make_command, env, step_file, log_path, tokens_for, a, note):
    best = None
    for attempt in range(1, a.tries + 1):
        with open(LOCK, "a") as lock:
            requested = time.time()
            fcntl.flock(lock, fcntl.LOCK_EX)
            lock_wait = time.time() - requested
            quiet = wait_for_quiet(a.quiet_wait)
            command = make_command()
            run = run_measured(command, env, step_file(), log_path)
            fcntl.flock(lock, fcntl.LOCK_UN)
        run["lock_wait_s"] = lock_wait
        if run["returncode"] != 0:
            sys.stdout.write(open(log_path).read()[-3000:])
            raise SystemExit(f"{label} failed with status {run['returncode']}; log: {log_path}")
        run["attempt"], run["quiet_before"] = attempt, quiet
        win = window(run, tokens_for(run))
        run["window"] = win
        note(f"  {label} attempt {attempt}: "
             + (f"{win['tokens_per_s']:,.0f} tok/s, others' CPU {win['others_cores']:.2f} cores, " if win else "")
             + f"load {run['load_before']:.2f} -> {run['load_after']:.2f} (waited {lock_wait:.0f} s for {LOCK})")
        if best is None or (win and best["window"] and win["others_cores"] < best["window"]["others_cores"]):
            best = run
        if not contended(run, win, a):
            break
    best["contended"] = contended(best, best["window"], a)
    return best


def fmt_rel(x, y):
    return abs(x - y) / max(abs(y), 1e-12)


def drive(a):
    if min(a.steps, a.steps_large) < 3:
        raise SystemExit("steps must be at least 3 (step 1 is the warm-up, memory is read at step N-1)")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bin_dir = os.path.abspath(a.bin)
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    cores = os.cpu_count()
    threads = a.threads or cores
    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    def note(text):
        print(text, file=sys.stderr, flush=True)

    data_dir = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data_dir, "train.jsonl")):
        sh([os.path.join(bin_dir, "n3rlhf"), "demo-data", "--out", data_dir, "--seed", "0"])
    train_jsonl = os.path.join(data_dir, "train.jsonl")

    # Tokenization cross-check: TRL's tokenization of every row against n3rlhf prepare's counts.
    from transformers import AutoTokenizer

    tokenizer_dir = os.path.join(repo, "assets/tokenizers/n3-demo-bpe")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    with open(train_jsonl, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    def trl_lengths(row):
        # TRL 1.16 DPOTrainer._prepare_dataset: EOS appended to each response, prompt and
        # prompt+response tokenized with special tokens (BOS), response from the divergence point,
        # then the collator's keep_start truncation to max_length.
        prompt = tok(row["prompt"])["input_ids"]
        out = []
        for key in ("chosen", "rejected"):
            text = row[key] if row[key].endswith(tok.eos_token) else row[key] + tok.eos_token
            out.append(min(len(tok(row["prompt"] + text)["input_ids"]), a.max_length))
        return out, len(prompt)

    row_tokens = [sum(trl_lengths(r)[0]) for r in rows]
    say(f"n3rlhf vs TRL DPOTrainer side by side ({time.strftime('%Y-%m-%d %H:%M')}, {cores} cores, "
        f"{os.uname().nodename})")
    say(f"data: {train_jsonl} ({len(rows)} pairs, n3rlhf demo-data --seed 0); batch {a.batch_size} pairs, "
        f"lr {a.learning_rate} constant, no warm-up, beta {a.beta}, sigmoid, max_length {a.max_length} keep_start, "
        f"weight decay {a.weight_decay}, max_grad_norm {a.max_grad_norm}, fp32, full fine-tuning, seed {a.seed}")
    say(f"threads: TRL torch.set_num_threads({threads}); n3rlhf-dist OMP_NUM_THREADS unset (cores / ranks per node)")

    import torch  # noqa: F401  (for the versions line)
    import transformers
    import trl

    say(f"peer: trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
    summary = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": cores, "models": {}}

    for key in a.models.split(","):
        preset = PRESETS.get(key, key)
        steps = a.steps if key == "tiny" else a.steps_large
        model_dir = os.path.join(work, "models", preset)
        if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
            sh([os.path.join(bin_dir, "n3rlhf"), "init-model", "--preset", preset, "--tokenizer", tokenizer_dir,
                "--out", model_dir, "--seed", "0", "--force"])
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        from safetensors import safe_open

        with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
            params = sum(math.prod(f.get_slice(n).get_shape()) for n in f.keys())
        order = n3rlhf_order(len(rows), a.seed, a.batch_size, steps)
        tokens_by_step = {s + 1: sum(row_tokens[i] for i in order[s * a.batch_size:(s + 1) * a.batch_size])
                          for s in range(steps)}
        say()
        say(f"=== {preset}: {params / 1e6:.2f}M parameters (hidden {cfg['hidden_size']} x {cfg['num_hidden_layers']} "
            f"layers, vocab {cfg['vocab_size']}), {steps} steps ===")

        runs = {}
        # n3rlhf, 1 rank (and 2 ranks ZeRO-2)
        for ranks in [int(r) for r in a.ranks.split(",")]:
            label = f"n3rlhf {ranks} rank{'s' if ranks > 1 else ''}"
            out = os.path.join(work, "out", f"n3rlhf-{preset}-{ranks}")
            job = os.path.join(work, f"job-{preset}-{ranks}.n3")
            with open(job, "w") as f:
                f.write(job_text("TrlSideBySide", model_dir, train_jsonl, os.path.join(work, "prepared"), out, a, steps))
            env = dict(os.environ)
            env.pop("OMP_NUM_THREADS", None)
            binary = os.path.join(bin_dir, "n3rlhf-dist")
            mpirun = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) \
                + os.environ.get("MPIRUN_ARGS", "").split()
            command = [binary, job] if ranks == 1 else mpirun + ["-np", str(ranks), binary, job]
            # The data is prepared once before the first run (outside the measured steps anyway).
            sh([os.path.join(bin_dir, "n3rlhf"), "prepare", job])

            def make(command=command, out=out):
                shutil.rmtree(out, ignore_errors=True)
                return command

            runs[label] = measured_with_retries(label, make, env, lambda out=out: os.path.join(out, "logs", "metrics.jsonl"),
                                                os.path.join(work, f"log-{preset}-n3rlhf-{ranks}.txt"),
                                                lambda run: tokens_by_step, a, note)
        # TRL
        trl_log = os.path.join(work, f"trl-steps-{preset}.jsonl")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        trl_command = [sys.executable, os.path.abspath(__file__), "trl", "--model", model_dir, "--data", train_jsonl,
                       "--steps", str(steps), "--batch-size", str(a.batch_size), "--learning-rate", str(a.learning_rate),
                       "--beta", str(a.beta), "--max-length", str(a.max_length), "--weight-decay", str(a.weight_decay),
                       "--max-grad-norm", str(a.max_grad_norm), "--threads", str(threads), "--seed", str(a.seed),
                       "--step-log", trl_log, "--out", os.path.join(work, "out", f"trl-{preset}")]

        def make_trl():
            if os.path.exists(trl_log):
                os.remove(trl_log)
            return trl_command

        runs["TRL"] = measured_with_retries("TRL", make_trl, env, lambda: trl_log,
                                            os.path.join(work, f"log-{preset}-trl.txt"),
                                            lambda run: {r["step"]: r["tokens"] for r in run["records"]}, a, note)
        trl_records = {r["step"]: r for r in runs["TRL"]["records"]}
        n3_label = next(iter(runs))
        n3_records = {r["step"]: r for r in runs[n3_label]["records"]}

        # Same batches, same tokens
        token_mismatch = [s for s in range(1, steps + 1) if trl_records[s]["tokens"] != tokens_by_step[s]]
        manifest = os.path.join(work, "prepared")
        prepared_tokens = None
        for root, _dirs, files in os.walk(manifest):
            if "manifest.json" in files and "train" in os.path.basename(root):
                with open(os.path.join(root, "manifest.json")) as f:
                    m = json.load(f)
                if m.get("tokenization", {}).get("max_length") == a.max_length:
                    prepared_tokens = m["counts"]["tokens"]
        say(f"tokens: TRL's tokenization of all {len(rows)} pairs = {sum(row_tokens):,}; n3rlhf prepare's manifest = "
            f"{prepared_tokens:,}" + (" (equal)" if prepared_tokens == sum(row_tokens) else " (DIFFERENT)")
            + f"; per-step token counts of TRL's batches equal the reconstructed n3rlhf batches' at "
            f"{steps - len(token_mismatch)}/{steps} steps")

        # Step 1
        say()
        say("step 1 (policy = reference)      n3rlhf           TRL              n3rlhf - TRL   relative")
        step1 = {}
        for name in ("loss", "logps/chosen", "logps/rejected", "rewards/margins", "rewards/accuracies", "grad_norm"):
            x, y = n3_records[1][name], trl_records[1][name]
            step1[name] = {"n3rlhf": x, "trl": y}
            say(f"  {name:30s} {x:15.7f}  {y:15.7f}  {x - y:+13.3e}  {fmt_rel(x, y):9.2e}")
        exact = trl_records[1].get("grad_norm_fp64")
        if exact is not None:
            step1["grad_norm_fp64"] = exact
            say(f"  grad_norm in float64 (TRL's gradients, before clipping) {exact:.7f}: n3rlhf off by "
                f"{fmt_rel(n3_records[1]['grad_norm'], exact):.2e}, TRL's float32 norm by {fmt_rel(trl_records[1]['grad_norm'], exact):.2e}")

        # Curves
        say()
        every = max(1, a.curve_every)
        say(f"curve (every {every} steps; the runs of {n3_label} and TRL)")
        names = [lbl for lbl in runs if lbl != "TRL"]
        header = "  step  " + "  ".join(f"loss {('n3-' + lbl.split()[1] + 'r'):>7s}" for lbl in names) + \
                 "  loss TRL   |" + "  ".join(f"acc {('n3-' + lbl.split()[1] + 'r'):>6s}" for lbl in names) + "  acc TRL"
        say(header)
        curves = {lbl: {r["step"]: r for r in runs[lbl]["records"]} for lbl in runs}
        for s in range(1, steps + 1):
            if s == 1 or s % every == 0 or s == steps:
                say(f"  {s:4d}  " + "  ".join(f"{curves[lbl][s]['loss']:12.5f}" for lbl in names)
                    + f"  {curves['TRL'][s]['loss']:9.5f}   |"
                    + "  ".join(f"{curves[lbl][s]['rewards/accuracies']:10.3f}" for lbl in names)
                    + f"  {curves['TRL'][s]['rewards/accuracies']:7.3f}")
        diffs = {}
        for lbl in names:
            d = [abs(curves[lbl][s]["loss"] - curves["TRL"][s]["loss"]) for s in range(1, steps + 1)]
            acc = [abs(curves[lbl][s]["rewards/accuracies"] - curves["TRL"][s]["rewards/accuracies"]) for s in range(1, steps + 1)]
            worst = max(range(steps), key=lambda i: d[i]) + 1
            diffs[lbl] = {"max_abs_loss_diff": max(d), "at_step": worst, "mean_abs_loss_diff": sum(d) / len(d),
                          "max_abs_accuracy_diff": max(acc)}
            say(f"  {lbl} vs TRL: max |loss difference| over {steps} steps {max(d):.2e} (step {worst}), mean "
                f"{sum(d) / len(d):.2e}; max |rewards/accuracies difference| {max(acc):.3f}; last loss "
                f"{curves[lbl][steps]['loss']:.5f} vs {curves['TRL'][steps]['loss']:.5f}")
        if len(names) > 1:
            d = [abs(curves[names[0]][s]["loss"] - curves[names[1]][s]["loss"]) for s in range(1, steps + 1)]
            say(f"  {names[0]} vs {names[1]}: max |loss difference| {max(d):.2e}")

        # Throughput and memory
        say()
        say(f"throughput over steps 2..{steps} (step 1 = warm-up; start-up excluded) and peak memory")
        say("  run               tokens   wall s   tokens/s  median step  tokens/CPU-s  cores  training peak  process peak"
            "  process CPU s  others' CPU  load  try")
        for lbl, run in runs.items():
            w = run["window"]
            say(f"  {lbl:16s} {w['tokens']:7d}  {w['wall_s']:7.2f}  {w['tokens_per_s']:9,.0f}  "
                f"{w['median_step_tokens_per_s']:11,.0f}  {w['tokens_per_cpu_s']:12,.0f}"
                f"  {w['cores_used']:5.2f}  {w['training_peak_rss_mib']:9,.0f} MiB  {run['peak_rss_mib']:8,.0f} MiB"
                f"  {run['process_cpu_s']:13.1f}  "
                f"{w['others_cores']:8.2f} c  {run['load_after']:4.1f}  {run['attempt']}"
                + ("  CONTENDED" if run["contended"] else ""))
        # n3rlhf's own per-step timer, a cross-check of the step-record timing
        own = sum(tokens_by_step[s] for s in range(2, steps + 1)) / sum(
            tokens_by_step[s] / n3_records[s]["tokens_per_second"] for s in range(2, steps + 1))
        trl_w = runs["TRL"]["window"]
        note_cpu = ""
        if "in_process_cpu_s" in trl_w:
            note_cpu = (f"; TRL's own process_time over the window {trl_w['in_process_cpu_s']:.2f} s vs "
                        f"{trl_w['cpu_s']:.2f} s sampled")
        say(f"  (n3rlhf's own step timer, tokens_per_second in metrics.jsonl: {own:,.0f} tokens/s{note_cpu})")
        ratios = {}
        for lbl in names:
            w = runs[lbl]["window"]
            ratios[lbl] = {"wall": w["tokens_per_s"] / trl_w["tokens_per_s"],
                           "median_step": w["median_step_tokens_per_s"] / trl_w["median_step_tokens_per_s"],
                           "cpu": w["tokens_per_cpu_s"] / trl_w["tokens_per_cpu_s"],
                           "memory": w["training_peak_rss_mib"] / trl_w["training_peak_rss_mib"],
                           "process_memory": runs[lbl]["peak_rss_mib"] / runs["TRL"]["peak_rss_mib"]}
            say(f"  ratio {lbl} / TRL: {ratios[lbl]['wall']:.2f}x tokens/s (wall; median step {ratios[lbl]['median_step']:.2f}x), "
                f"{ratios[lbl]['cpu']:.2f}x tokens per "
                f"CPU-second, peak memory in training {ratios[lbl]['memory']:.2f}x"
                + (" (largest rank)" if lbl != names[0] else "")
                + f" (whole process {ratios[lbl]['process_memory']:.2f}x)")
        say("  (training peak: the largest VmHWM of the run's processes when step N-1 ended; process peak: wait4's "
            "ru_maxrss, which for n3rlhf includes writing the last checkpoint and the model after step N)")
        summary["models"][preset] = {
            "parameters": params, "steps": steps, "step1": step1, "curve": diffs, "ratios": ratios,
            "runs": {lbl: {k: v for k, v in run.items() if k != "records"} for lbl, run in runs.items()},
            "losses": {lbl: [curves[lbl][s]["loss"] for s in range(1, steps + 1)] for lbl in runs},
            "accuracies": {lbl: [curves[lbl][s]["rewards/accuracies"] for s in range(1, steps + 1)] for lbl in runs},
        }
    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(work, "report.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    say()
    say(f"report: {os.path.join(work, 'report.txt')} and report.json; logs and job files in {work}")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--batch-size", type=int, default=8)
    common.add_argument("--learning-rate", type=float, default=5e-4)
    common.add_argument("--beta", type=float, default=0.1)
    common.add_argument("--max-length", type=int, default=64)
    common.add_argument("--weight-decay", type=float, default=0.0)
    common.add_argument("--max-grad-norm", type=float, default=1.0)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=0, help="TRL's torch threads (default: all cores)")

    t = sub.add_parser("trl", parents=[common])
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--step-log", required=True)
    t.add_argument("--out", required=True)

    d = sub.add_parser("drive", parents=[common])
    d.add_argument("--bin", default="build/bin")
    d.add_argument("--work", default="/tmp/n3rlhf-trl-side-by-side")
    d.add_argument("--models", default="tiny,100m", help="comma list of tiny, 100m (or preset names)")
    d.add_argument("--steps", type=int, default=50, help="steps for the tiny model")
    d.add_argument("--steps-large", type=int, default=12, help="steps for the other models")
    d.add_argument("--ranks", default="1,2", help="n3rlhf-dist world sizes to run (ZeRO-2)")
    d.add_argument("--curve-every", type=int, default=5)
    d.add_argument("--tries", type=int, default=3, help="attempts per run while the machine is contended")
    d.add_argument("--max-others", type=float, default=0.25, help="others' CPU (cores) above which a run is repeated")
    d.add_argument("--max-load", type=float, default=2.5, help="1-minute load average above which a run is repeated")
    d.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait for a quiet machine before each run")
    args = parser.parse_args()
    if args.mode == "trl":
        args.threads = args.threads or os.cpu_count()
        run_trl(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
