#!/usr/bin/env python3
"""n3rlhf_wandb_sidecar.py: logs an n3rlhf run to Weights & Biases with pip's `wandb`.

Rank 0 of n3rlhf-dist (src/io/wandb_sink.cpp) starts this script and writes JSON lines to its
standard input, one object per line:

  {"project": "n3rlhf", "run_name": "T", "tags": ["a"], "config": {"k": "v"}, "dir": "/out/logs"}
  {"step": 10, "wall_time": 1764110012.5, "scalars": {"train/loss": 0.68, "x": "NaN"}}
  {"config": {"k2": "v2"}}                       (parameters that came after the header)
  {"end": "FINISHED", "wall_time": 1764110900.0}   (or FAILED, KILLED)

The first line (the header) opens the run: `wandb.init` in mode "online" when WANDB_API_KEY is
set, "offline" otherwise, or whatever WANDB_MODE says when the user set it. Each step line is
one `run.log(scalars, step=step)`; non-finite values arrive as the strings "NaN", "Infinity",
"-Infinity" (JSON has no NaN). The end line, or the end of the stream without one (the trainer
died: the run is marked failed), finishes the run with `run.finish(exit_code)`, which flushes
every record to the run's files (and, online, to the server) before this process exits.

Exit status: 0 when the run was finished, 2 when the header is missing or malformed (nothing was
logged), 3 when `wandb` cannot be imported, 4 when `wandb.init` failed (no network or no valid
API key for an online run, say). `--check` only imports wandb and prints its version:
n3rlhf runs that before training to refuse a job whose Python lacks wandb (RLHF005).
"""

import json
import math
import os
import signal
import sys

PREFIX = "n3rlhf-wandb:"

# The run's outcome as the trainer names it -> the exit code W&B records (non-zero: failed).
EXIT_CODES = {"FINISHED": 0, "FAILED": 1, "KILLED": 143}

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def say(message):
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def import_wandb():
    try:
        import wandb  # noqa: PLC0415 (imported late: --check and a broken header must not wait for it)
    except ImportError as error:
        say(f"cannot import wandb with {sys.executable} ({error}); pip install wandb")
        sys.exit(3)
    return wandb


def read_header(line):
    """The header as a dict, or exits with status 2 and a message naming what is wrong."""
    if not line.strip():
        say("no header line on standard input (expected a JSON object with project, run_name, tags, config, dir)")
        sys.exit(2)
    try:
        header = json.loads(line)
    except ValueError as error:
        say(f"the header line is not JSON ({error}): {line.strip()[:200]!r}")
        sys.exit(2)
    if not isinstance(header, dict):
        say(f"the header line must be a JSON object, not {type(header).__name__}")
        sys.exit(2)
    expected = {"project": str, "run_name": str, "tags": list, "config": dict, "dir": str}
    for key, kind in expected.items():
        if key not in header:
            say(f"the header line lacks \"{key}\" (it has: {', '.join(sorted(header)) or 'nothing'})")
            sys.exit(2)
        if not isinstance(header[key], kind):
            say(f"the header's \"{key}\" must be a JSON {kind.__name__}, not {type(header[key]).__name__}")
            sys.exit(2)
    if not all(isinstance(tag, str) for tag in header["tags"]):
        say("the header's \"tags\" must be strings")
        sys.exit(2)
    return header


def take_stdin():
    """The trainer's pipe as a stream of this process alone.

    fd 0 becomes /dev/null: wandb's service process inherits fd 0, and if it held the pipe open
    the trainer would not see this process die (its writes would go on filling a pipe that
    nobody reads).
    """
    fd = os.dup(0)  # non-inheritable (PEP 446)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return os.fdopen(fd, "r", encoding="utf-8", errors="replace")


def run_mode():
    """WANDB_MODE when the user set it; otherwise online with an API key, offline without."""
    mode = os.environ.get("WANDB_MODE", "").strip()
    if mode:
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def scalar_value(value):
    if isinstance(value, str):
        return NON_FINITE.get(value, value)
    return value


def main():
    if sys.argv[1:] == ["--check"]:
        wandb = import_wandb()
        print(f"wandb {wandb.__version__}", flush=True)
        return 0
    # The trainer says when the run ends (its end line, or closing the stream); a Ctrl-C meant for
    # it must not cut the run short here before the last records are written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    records_in = take_stdin()
    header = read_header(records_in.readline())
    wandb = import_wandb()
    # WANDB_DIR, when the user set it, wins over the trainer's default (its log_dir).
    directory = os.environ.get("WANDB_DIR") or header["dir"]
    mode = run_mode()
    try:
        os.makedirs(directory, exist_ok=True)
        run = wandb.init(
            project=header["project"],
            name=header["run_name"],
            tags=header["tags"],
            config=header["config"],
            dir=directory,
            mode=mode,
            # Nothing of this process' own console is worth recording; W&B's messages go to stderr.
            settings=wandb.Settings(console="off"),
        )
    except Exception as error:  # noqa: BLE001 (any failure: say it in one line; the trainer warns once)
        say(f"wandb.init failed ({mode}, dir {directory}): {type(error).__name__}: {error}")
        return 4
    say(f"logging run \"{header['run_name']}\" ({mode}) to {run.dir}")

    outcome = None
    records = 0
    for line_number, line in enumerate(records_in, start=2):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            # One bad line costs that line, not the run.
            say(f"line {line_number} skipped ({error}): {line.strip()[:200]!r}")
            continue
        if "end" in record:
            outcome = str(record["end"])
            break
        if "config" in record and isinstance(record["config"], dict):
            run.config.update(record["config"], allow_val_change=True)
            continue
        if "step" in record and isinstance(record.get("scalars"), dict):
            scalars = {name: scalar_value(value) for name, value in record["scalars"].items()}
            if isinstance(record.get("wall_time"), (int, float)):
                scalars["_timestamp"] = float(record["wall_time"])  # when the trainer logged it
            run.log(scalars, step=int(record["step"]))
            records += 1
            continue
        say(f"line {line_number} skipped (neither a step, a config nor an end record): {line.strip()[:200]!r}")

    if outcome is None:
        say("the trainer closed the stream without an end line; the run is marked failed")
        outcome = "FAILED"
    exit_code = EXIT_CODES.get(outcome, 1)
    run.finish(exit_code=exit_code)
    say(f"finished the run ({outcome}, exit code {exit_code}) after {records} step record(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
