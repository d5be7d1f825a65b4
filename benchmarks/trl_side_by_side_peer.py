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
# partial one dropped). `n3rlhf_order` (n3rlhf_data_order.py) reproduces it, the TRL data set is
# written in that order, and TRL reads it with train_sampling_strategy="sequential" (a
# SequentialSampler): both see the same 8 pairs at every step. Step 1's log-probs confirm it (a
# different batch would differ by whole nats).
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
#
# The TRL run, the step log, the lock, the contention measures, the process-tree sampling and the
# rates are shared with peft_side_by_side_peer.py: benchmarks/trl_peer_common.py (n3rlhf's data
# order: benchmarks/n3rlhf_data_order.py).
import fcntl
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
# The TRL side

def run_trl(args):
    torch, train, tokenizer = common.trl_run_inputs(args)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    config = common.dpo_config(args, args.weight_decay, args.max_grad_norm)

    captured = {}
    keys = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
            "logps/rejected")

    class Trainer(common.capturing_dpo_trainer(captured, keys, "pairs")):
        def _clip_grad_norm(self, model):
            if self.state.global_step == 0:
                # Step 1's gradient norm in float64, against which both sides' float32 norms are read.
                with torch.no_grad():
                    squares = sum(p.grad.double().pow(2).sum() for p in model.parameters() if p.grad is not None)
                captured["grad_norm_fp64"] = math.sqrt(float(squares))
            elif "grad_norm_fp64" in captured:
                del captured["grad_norm_fp64"]
            return super()._clip_grad_norm(model)

    # One record per step, written with the step's log (grad_norm, learning_rate).
    log = common.step_log(args.step_log, captured, with_logs=True)
    trainer = Trainer(model=model, ref_model=reference, args=config, train_dataset=train, processing_class=tokenizer,
                      callbacks=[log])
    trainer.train()
    log.close()


# ----------------------------------------------------------------------------------------------
# Measurement

def run_measured(command, env, step_file, log_path, poll=0.01):
    """Runs `command`, samples the process tree's CPU seconds and the machine's busy seconds when
    each new step record appears in `step_file`, returns the records and wait4's rusage."""
    started = time.time()
    load_before = common.load_averages()[0]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    tree = common.ProcessTree(proc.pid, refresh_every=0.25)
    steps = common.StepRecords(step_file, lambda: {
        "_tree_cpu": tree.cpu_seconds(), "_busy": common.system_busy_seconds(), "_driver_cpu": time.process_time(),
        "_peak_rss_mib": tree.memory_kib()[0] / 1024.0})
    status, usage = common.follow(proc.pid, steps, poll)
    code = os.waitstatus_to_exitcode(status)
    return {
        "records": steps.records,
        "returncode": code,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "process_wall_s": time.time() - started,
        "load_before": load_before,
        "load_after": common.load_averages()[0],
    }


def window(run, tokens_by_step, first=1):
    """Rates over steps first+1..N (step `first` is the warm-up)."""
    records = {r["step"]: r for r in run["records"]}
    last = max(records)
    if first not in records or last <= first:
        return None
    result, driver = common.window_rates(records, tokens_by_step, "_tree_cpu", first)
    wall, cpu = result["wall_s"], result["cpu_s"]
    # Peak memory of training: VmHWM when step N-1's record appeared (n3rlhf writes a checkpoint and
    # the model after step N, TRL here saves nothing; a save's buffers are not the training's peak).
    result.update(training_peak_rss_mib=records.get(last - 1, records[last])["_peak_rss_mib"], cores_used=cpu / wall,
                  driver_cores=driver / wall if wall > 0 else float("nan"))
    a, b = records[first], records[last]
    if "cpu_time" in a:  # TRL's own process_time, a cross-check of the /proc sampling
        result["in_process_cpu_s"] = b["cpu_time"] - a["cpu_time"]
    return result


# ----------------------------------------------------------------------------------------------
# The driver

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
            quiet = common.wait_for_quiet(a.quiet_wait, 0.3)
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
        best = common.less_disturbed(best, run)
        if not contended(run, win, a):
            break
    best["contended"] = contended(best, best["window"], a)
    return best


def fmt_rel(x, y):
    return abs(x - y) / max(abs(y), 1e-12)


def drive(a):
    if min(a.steps, a.steps_large) < 3:
        raise SystemExit("steps must be at least 3 (step 1 is the warm-up, memory is read at step N-1)")
    repo, bin_dir, work, cores, threads = common.driver_places(a)
    report = common.Report()
    say, note = report.say, report.note

    train_jsonl = common.demo_data(bin_dir, work)

    # Tokenization cross-check: TRL's tokenization of every row against n3rlhf prepare's counts.
    from transformers import AutoTokenizer

    tokenizer_dir = os.path.join(repo, common.TOKENIZER)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = common.read_jsonl(train_jsonl)
    row_tokens = [common.trl_row_tokens(tok, r, a.max_length) for r in rows]
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
        model_dir = common.init_model(bin_dir, tokenizer_dir, work, preset)
        cfg, shapes = common.model_shapes(model_dir)
        params = common.parameter_count(shapes)
        tokens_by_step = common.step_tokens(len(rows), a, steps, row_tokens.__getitem__)
        say()
        say(f"=== {preset}: {params / 1e6:.2f}M parameters (hidden {cfg['hidden_size']} x {cfg['num_hidden_layers']} "
            f"layers, vocab {cfg['vocab_size']}), {steps} steps ===")

        runs = {}
        # n3rlhf, 1 rank (and 2 ranks ZeRO-2)
        # data.share_prefix is on by default (the prompt of each pair computed once); --padded adds a
        # 1-rank run with it off: TRL's own padded concatenated layout, the same work as TRL.
        variants = [(int(r), "") for r in a.ranks.split(",")] + ([(1, "padded")] if a.padded else [])
        for ranks, variant in variants:
            label = f"n3rlhf {ranks} rank{'s' if ranks > 1 else ''}" + (f", {variant}" if variant else "")
            suffix = f"{ranks}" + (f"-{variant}" if variant else "")
            out = os.path.join(work, "out", f"n3rlhf-{preset}-{suffix}")
            job = os.path.join(work, f"job-{preset}-{suffix}.n3")
            with open(job, "w") as f:
                f.write(common.job_text("benchmarks/trl_side_by_side_peer.py", "TrlSideBySide", model_dir, train_jsonl,
                                        os.path.join(work, "prepared"), out, a, steps, a.weight_decay, a.max_grad_norm,
                                        "zero2"))
            env = dict(os.environ)
            env.pop("OMP_NUM_THREADS", None)
            binary = os.path.join(bin_dir, "n3rlhf-dist")
            mpirun = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) \
                + os.environ.get("MPIRUN_ARGS", "").split()
            command = [binary, job] if ranks == 1 else mpirun + ["-np", str(ranks), binary, job]
            if variant == "padded":
                command += ["--set", "data.share_prefix=false"]
            # The data is prepared once before the first run (outside the measured steps anyway).
            sh([os.path.join(bin_dir, "n3rlhf"), "prepare", job])

            def make(command=command, out=out):
                shutil.rmtree(out, ignore_errors=True)
                return command

            runs[label] = measured_with_retries(label, make, env, lambda out=out: os.path.join(out, "logs", "metrics.jsonl"),
                                                os.path.join(work, f"log-{preset}-n3rlhf-{suffix}.txt"),
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
    report.save(work, summary, f"logs and job files in {work}")


def main():
    parser, sub, options = common.command_line(learning_rate=5e-4, max_length=64)
    options.add_argument("--weight-decay", type=float, default=0.0)
    options.add_argument("--max-grad-norm", type=float, default=1.0)

    common.trl_subcommand(sub, options)
    d = sub.add_parser("drive", parents=[options])
    d.add_argument("--bin", default="build/bin")
    d.add_argument("--work", default="/tmp/n3rlhf-trl-side-by-side")
    d.add_argument("--models", default="tiny,100m", help="comma list of tiny, 100m (or preset names)")
    d.add_argument("--steps", type=int, default=50, help="steps for the tiny model")
    d.add_argument("--steps-large", type=int, default=12, help="steps for the other models")
    d.add_argument("--ranks", default="1,2", help="n3rlhf-dist world sizes to run (ZeRO-2)")
    d.add_argument("--padded", action="store_true",
                   help="also run n3rlhf on 1 rank with data.share_prefix off (TRL's padded layout)")
    d.add_argument("--curve-every", type=int, default=5)
    d.add_argument("--tries", type=int, default=3, help="attempts per run while the machine is contended")
    d.add_argument("--max-others", type=float, default=0.25, help="others' CPU (cores) above which a run is repeated")
    d.add_argument("--max-load", type=float, default=2.5, help="1-minute load average above which a run is repeated")
    d.add_argument("--quiet-wait", type=float, default=60, help="seconds to wait for a quiet machine before each run")
    args = parser.parse_args()
    if args.mode == "trl":
        run_trl(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
