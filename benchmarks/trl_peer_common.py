# trl_peer_common.py: what the two side-by-side peers of n3rlhf-dist share,
# trl_side_by_side_peer.py (against TRL's DPOTrainer) and peft_side_by_side_peer.py (against
# TRL + PEFT LoRA / QLoRA):
#   - the TRL side: the DPOTrainer run on n3rlhf's data order (n3rlhf_data_order.py) with the
#     settings made equal to n3rlhf's (DPOConfig), the loss/tokens capture and the per-step
#     timing callback that writes the step log;
#   - the machine: the benchmark lock (N3RLHF_BENCH_LOCK), the wait for a quiet machine and the
#     CPU that other processes use, the load average;
#   - the measurement: the run's process tree (CPU seconds, resident memory), the step log read
#     as the run writes it, the rates over steps 2..N;
#   - the driver: the demo data, model and job file, the tokens TRL counts in a step, the report.
# Each peer keeps what it measures differently (how the lock is held, which memory it reports,
# when a run counts as contended) and its report.
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from n3rlhf_data_order import n3rlhf_order  # noqa: E402

# Benchmarks on this shared machine take this lock for each measured run (the model and sharding
# benchmarks with N3RLHF_BENCH_LOCK do too), so that they never overlap.
LOCK = os.environ.get("N3RLHF_BENCH_LOCK", "/tmp/n3rlhf-bench.lock")

# Short names of init-model presets.
PRESETS = {"tiny": "tiny-llama", "100m": "llama-100m"}

TOKENIZER = "assets/tokenizers/n3-demo-bpe"


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------
# Command line

def command_line(learning_rate, max_length):
    """The peer's parser, its modes (subparsers, in args.mode) and the options both the driver and
    the TRL run take (the parent of both modes: a peer adds its own to it before it makes them)."""
    parser = argparse.ArgumentParser()
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--batch-size", type=int, default=8)
    options.add_argument("--learning-rate", type=float, default=learning_rate)
    options.add_argument("--beta", type=float, default=0.1)
    options.add_argument("--max-length", type=int, default=max_length)
    options.add_argument("--seed", type=int, default=0)
    options.add_argument("--threads", type=int, default=0, help="TRL's torch threads (default: all cores)")
    return parser, parser.add_subparsers(dest="mode", required=True), options


def trl_subcommand(sub, options):
    """`PEER.py trl ...`: one TRL DPOTrainer run writing a step log (the driver runs it)."""
    t = sub.add_parser("trl", parents=[options])
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--step-log", required=True)
    t.add_argument("--out", required=True)
    return t


# ----------------------------------------------------------------------------------------------
# The TRL side (one process per run)

def trl_run_inputs(a):
    """torch with the run's threads (--threads, default all cores) and seed, the data set's pairs in
    the order n3rlhf-dist trains on them (with the sequential sampler of dpo_config, TRL's step s
    sees the same pairs as n3rlhf's) and the model's tokenizer."""
    import torch

    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(a.seed)
    from datasets import Dataset
    from transformers import AutoTokenizer

    rows = read_jsonl(a.data)
    order = n3rlhf_order(len(rows), a.seed, a.batch_size, a.steps)
    train = Dataset.from_list([{k: rows[i][k] for k in ("prompt", "chosen", "rejected")} for i in order])
    return torch, train, AutoTokenizer.from_pretrained(a.model)


def dpo_config(a, weight_decay, max_grad_norm):
    """DPOConfig with n3rlhf's settings: fp32 (DPOConfig defaults bf16=True, which on the CPU
    autocasts to bfloat16), constant learning rate without warm-up, sigmoid loss, keep_start
    truncation, AdamW as n3rlhf's, dropout off, one log record per step, no saving."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=a.out, per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        learning_rate=a.learning_rate, lr_scheduler_type="constant", warmup_steps=0, max_steps=a.steps,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, beta=a.beta, loss_type=["sigmoid"], max_length=a.max_length,
        # DPOConfig defaults gradient_checkpointing=True in TRL 1.16: off, as n3rlhf recomputes nothing.
        gradient_checkpointing=False,
        truncation_mode="keep_start", bf16=False, fp16=False, use_cpu=True, seed=a.seed,
        train_sampling_strategy="sequential", dataloader_num_workers=0, disable_dropout=True,
        logging_steps=1, save_strategy="no", report_to=[], num_train_epochs=1)


def capturing_dpo_trainer(captured, metric_keys, count):
    """A DPOTrainer class that puts into `captured`, at each training batch, the loss, the real
    tokens (attention_mask.sum(): prompt + response + EOS, BOS included, no padding, which is what
    n3rlhf's CollatedBatch::real_tokens counts), the batch size as `count` ("pairs" or "rows") and
    the last value of each of TRL's train metrics in `metric_keys`."""
    from trl import DPOTrainer

    class CapturingDPOTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                value = loss[0] if isinstance(loss, tuple) else loss
                captured["loss"] = value.detach().item()
                captured["tokens"] = int(inputs["attention_mask"].sum().item())
                rows = int(inputs["input_ids"].shape[0])
                captured[count] = rows // 2 if count == "pairs" else rows
                for key in metric_keys:
                    if self._metrics["train"].get(key):
                        captured[key] = self._metrics["train"][key][-1]
            return loss

    return CapturingDPOTrainer


def step_log(path, captured, with_logs):
    """The per-step timing callback: one JSON record per optimizer step in `path`, `captured` with
    the step, the wall time at the step's end and the process's CPU time then.
    with_logs: written when the step's log arrives, with its grad_norm and learning_rate;
    otherwise written at the step's end, with the wall time at the step's begin (begin_time)."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        def __init__(self):
            self.file = open(path, "w", encoding="utf-8")

        def write(self, record):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

        def close(self):
            self.file.close()

        def on_step_begin(self, _args, state, control, **kwargs):
            if not with_logs:
                captured["begin_time"] = time.time()

        def on_step_end(self, _args, state, control, **kwargs):
            end = {"step": state.global_step, "wall_time": time.time(), "cpu_time": time.process_time()}
            if with_logs:
                captured.update(end)
            else:
                self.write(dict(captured, **end))

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if not with_logs or logs is None or "loss" not in logs or captured.get("step") != state.global_step:
                return
            self.write(dict(captured, grad_norm=float(logs.get("grad_norm", float("nan"))),
                            learning_rate=float(logs.get("learning_rate", float("nan")))))

    return StepLog()


# ----------------------------------------------------------------------------------------------
# The machine: lock, contention

def system_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def load_averages():
    """The 1-, 5- and 15-minute load averages."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def wait_for_quiet(max_wait, threshold, window=2.0):
    """Waits until the machine's other processes use under `threshold` cores over `window` seconds
    (compiles by others come and go), `max_wait` seconds at the most; returns the last measured use."""
    deadline = time.time() + max_wait
    while True:
        b0, t0 = system_busy_seconds(), time.time()
        time.sleep(window)
        used = (system_busy_seconds() - b0) / (time.time() - t0)
        if used < threshold or time.time() > deadline:
            return used


# ----------------------------------------------------------------------------------------------
# Measurement

class ProcessTree:
    """The CPU seconds and the resident memory of a process and its descendants (psutil, /proc).
    Descendants are looked for at most every `refresh_every` seconds."""

    def __init__(self, pid, refresh_every=0.0):
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.procs = {pid: self.root}
        self.refresh_every = refresh_every
        self.refreshed = 0.0

    def refresh(self):
        now = time.time()
        if now - self.refreshed < self.refresh_every:
            return
        try:
            for child in self.root.children(recursive=True):
                self.procs.setdefault(child.pid, child)
        except self.psutil.Error:
            pass
        self.refreshed = now

    def cpu_seconds(self):
        self.refresh()
        total = 0.0
        for proc in list(self.procs.values()):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except self.psutil.Error:
                pass
        return total

    def memory_kib(self):
        """The largest VmHWM (peak resident set so far), VmRSS and RssAnon among the tree's processes."""
        hwm = rss = anon = 0
        for pid in list(self.procs):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm = max(hwm, int(line.split()[1]))
                        elif line.startswith("VmRSS:"):
                            rss = max(rss, int(line.split()[1]))
                        elif line.startswith("RssAnon:"):
                            anon = max(anon, int(line.split()[1]))
            except OSError:
                pass
        return hwm, rss, anon


class StepRecords:
    """The step log a run writes, read as it grows: each new record with a step and a loss gets the
    fields sample() returns when its lines were read (the run's CPU, the machine's busy time, ...)."""

    def __init__(self, path, sample):
        self.path, self.sample = path, sample
        self.records, self.position, self.pending = [], 0, ""

    def read_new(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.position)
            chunk = f.read()
            self.position = f.tell()
        if not chunk:
            return
        sampled = self.sample()
        self.pending += chunk
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            if "step" not in record or "loss" not in record:
                continue
            record.update(sampled)
            self.records.append(record)


def follow(pid, steps, poll, ready=None):
    """Reads `steps` (StepRecords) every `poll` seconds until process `pid` ends, once ready()
    (when given) says the run has started; returns wait4's status and rusage."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done == 0 and ready is not None and not ready():
            time.sleep(poll)
            continue
        steps.read_new()
        if done != 0:
            return status, usage
        time.sleep(poll)


def window_rates(records, tokens_by_step, cpu_key, first=1):
    """The rates over steps first+1..N of a run's step records (by step; step `first` is the
    warm-up, start-up is outside): tokens over the wall time from the end of step `first` to the end
    of step N, over the CPU seconds of the run (records[s][cpu_key]) in that window, the median step,
    and the cores other processes used in the window (the machine's busy time less the run's and
    the driver's). Returns those and the driver's CPU seconds in the window."""
    last = max(records)
    a, b = records[first], records[last]
    steps = range(first + 1, last + 1)
    tokens = sum(tokens_by_step[s] for s in steps)
    wall = b["wall_time"] - a["wall_time"]
    cpu = b[cpu_key] - a[cpu_key]
    driver = b["_driver_cpu"] - a["_driver_cpu"]
    others = max(0.0, (b["_busy"] - a["_busy"]) - cpu - driver) / wall if wall > 0 else float("nan")
    # The median step, robust to a burst of someone else's work during the window.
    step_rates = sorted(tokens_by_step[s] / (records[s]["wall_time"] - records[s - 1]["wall_time"])
                        for s in steps
                        if s in records and s - 1 in records and records[s]["wall_time"] > records[s - 1]["wall_time"])
    median = step_rates[len(step_rates) // 2] if step_rates else float("nan")
    rates = {"steps": last - first, "tokens": tokens, "wall_s": wall, "cpu_s": cpu, "tokens_per_s": tokens / wall,
             "tokens_per_cpu_s": tokens / cpu if cpu > 0 else float("nan"), "median_step_tokens_per_s": median,
             "others_cores": others}
    return rates, driver


def less_disturbed(best, run):
    """Of two attempts, the one other processes disturbed less (the earlier one on a tie)."""
    win = run["window"]
    if best is None or (win and best["window"] and win["others_cores"] < best["window"]["others_cores"]):
        return run
    return best


# ----------------------------------------------------------------------------------------------
# The driver

def driver_places(a):
    """The repository, the binaries (--bin) and the work folder (--work, made here) as absolute
    paths, the machine's cores and the TRL runs' threads (--threads, default all cores)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    cores = os.cpu_count()
    return repo, os.path.abspath(a.bin), work, cores, a.threads or cores


def demo_data(bin_dir, work):
    """n3rlhf demo-data --seed 0 in WORK/data (once); returns its train.jsonl."""
    data_dir = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data_dir, "train.jsonl")):
        subprocess.run([os.path.join(bin_dir, "n3rlhf"), "demo-data", "--out", data_dir, "--seed", "0"], check=True,
                       stdout=subprocess.DEVNULL)
    return os.path.join(data_dir, "train.jsonl")


def init_model(bin_dir, tokenizer_dir, work, preset):
    """n3rlhf init-model --preset PRESET --seed 0 with the demo tokenizer in WORK/models/PRESET (once)."""
    model_dir = os.path.join(work, "models", preset)
    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        subprocess.run([os.path.join(bin_dir, "n3rlhf"), "init-model", "--preset", preset, "--tokenizer",
                        tokenizer_dir, "--out", model_dir, "--seed", "0", "--force"], check=True,
                       stdout=subprocess.DEVNULL)
    return model_dir


def model_shapes(model_dir):
    """The model's config.json and the shape of each tensor of its model.safetensors."""
    from safetensors import safe_open

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        shapes = {n: f.get_slice(n).get_shape() for n in f.keys()}
    return cfg, shapes


def parameter_count(shapes):
    return sum(math.prod(s) for s in shapes.values())


def trl_row_tokens(tok, row, max_length):
    """The real tokens of a pair's chosen and rejected rows as TRL 1.16's DPOTrainer makes them
    (_prepare_dataset: EOS appended to each response, prompt + response tokenized with the special
    tokens, BOS included; then the collator's keep_start truncation to max_length)."""
    total = 0
    for key in ("chosen", "rejected"):
        text = row[key] if row[key].endswith(tok.eos_token) else row[key] + tok.eos_token
        total += min(len(tok(row["prompt"] + text)["input_ids"]), max_length)
    return total


def step_tokens(rows_count, a, steps, row_tokens):
    """The tokens of each step (1..steps) of n3rlhf's batches; row_tokens(i) gives row i's."""
    order = n3rlhf_order(rows_count, a.seed, a.batch_size, steps)
    return {s + 1: sum(row_tokens(i) for i in order[s * a.batch_size:(s + 1) * a.batch_size]) for s in range(steps)}


def job_text(writer, name, model, data, prepared, out, a, steps, weight_decay, max_grad_norm, strategy,
             reference=None, peft_block=""):
    """The n3rlhf job with the settings of the TRL side (dpo_config): DPO, fp32 on the CPU, n3rlhf's
    data order without length grouping or an eval split, a step record per step, no saving but the
    last; `reference`: a reference_model directory; `peft_block`: the peft { ... } line(s)."""
    reference_line = f'    reference_model: "{reference}"\n' if reference else ""
    return f"""# written by {writer}
train rlhf "{name}" {{
    base_model: "{model}"
{reference_line}    algorithm: "dpo"
    dataset: "{data}"
{peft_block}    hyperparameters: {{
        learning_rate: {a.learning_rate}
        batch_size: {a.batch_size}
        max_steps: {steps}
        warmup_steps: 0
        lr_scheduler: "constant"
        weight_decay: {weight_decay}
        max_grad_norm: {max_grad_norm}
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
    distributed: {{ strategy: "{strategy}" }}
}}
"""


class Report:
    """say(): a line of the report, printed and kept for report.txt; note(): progress on stderr."""

    def __init__(self):
        self.lines = []

    def say(self, text=""):
        print(text, flush=True)
        self.lines.append(text)

    @staticmethod
    def note(text):
        print(text, file=sys.stderr, flush=True)

    def save(self, work, summary, rest):
        """Writes WORK/report.json (summary) and report.txt (the lines so far), then says where they
        are and `rest` (what else the work folder holds)."""
        with open(os.path.join(work, "report.json"), "w") as f:
            json.dump(summary, f, indent=1)
        with open(os.path.join(work, "report.txt"), "w") as f:
            f.write("\n".join(self.lines) + "\n")
        self.say()
        self.say(f"report: {os.path.join(work, 'report.txt')} and report.json; {rest}")
