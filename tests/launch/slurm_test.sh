#!/usr/bin/env bash
# slurm_test.sh: launch/slurm/n3rlhf.sbatch under a real Slurm. A single-node cluster on loopback
# (munged with a key made here, slurmctld and slurmd from Debian's slurm-wlm with a slurm.conf
# written here, free ports, every state and spool file in a temp dir); jobs are submitted with
# sbatch --wait, as a user would, so the script runs as Slurm's spooled copy. Cases:
#   mpirun  - submitted from the project's root, N3RLHF_LAUNCHER=mpirun: a split GRPO job on 2 ranks (policy; rollout + reward)
#             trains (exit 0, JobState COMPLETED, 2-rank world, summary line, metrics, model);
#   srun    - submitted from another directory with N3RLHF_HOME, launcher auto: srun --mpi=pmix
#             is detected and chosen, and the same job trains as one 2-rank world;
#   nohome  - from another directory without N3RLHF_HOME: exit 2 at once, naming N3RLHF_HOME;
#   invalid - a job file with an error: exit 2 with its RLHF code, no rank started;
#   default - no job argument, --dry-run: examples/ppo.n3 (the split PPO job) on 8 ranks of one
#             node prints each rank's plan.
# The daemons are stopped (by their pids) and the temp dir removed on exit. Exit 77 (ctest:
# skipped) with the reason where slurm-wlm or munge is missing or this is not root.
#   slurm_test.sh BIN_DIR SOURCE_DIR [CASE...]
set -uo pipefail
bin=$(cd "$1" && pwd)
source_dir=$(cd "$2" && pwd)
shift 2
cases=("$@")
[[ ${#cases[@]} -eq 0 ]] && cases=(mpirun srun nohome invalid default)
failures=0
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

for program in munged munge slurmctld slurmd sbatch scontrol sinfo; do
  command -v "$program" > /dev/null || PATH=$PATH:/usr/sbin command -v "$program" > /dev/null \
    || skip "$program is not installed (scripts/setup.sh installs slurm-wlm and munge)"
done
export PATH=$PATH:/usr/sbin
[[ $(id -u) -eq 0 ]] || skip "slurmd must run as root to start jobs as their user"

work=$(mktemp -d /tmp/n3rlhf-slurm-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  if [[ -n ${SLURM_CONF:-} ]]; then scancel --user="$(id -un)" 2> /dev/null; sleep 1; fi
  # Newest first: slurmd, slurmctld, munged.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2> /dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2> /dev/null
  done
  if [[ -n ${N3RLHF_TEST_KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# Nothing of an enclosing Slurm job (ctest run inside an allocation) may leak into this cluster's.
for name in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC)_'); do unset "$name"; done

# munge: a fresh key, its socket and files in the temp dir.
mkdir -m 700 "$work/munge"
head -c 1024 /dev/urandom > "$work/munge/munge.key"
chmod 400 "$work/munge/munge.key"
socket=$work/munge/munge.socket
munged --foreground --force --socket="$socket" --key-file="$work/munge/munge.key" --pid-file="$work/munge/munged.pid" \
  --log-file="$work/munge/munged.log" --seed-file="$work/munge/munged.seed" > "$work/munge/stdout.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [[ -S $socket ]] && break; sleep 0.1; done
munge -S "$socket" -n | unmunge -S "$socket" > /dev/null || { fail "munged does not work: $(cat "$work/munge/stdout.log")"; exit 1; }

read -r ctld_port slurmd_port < <(python3 -c "
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(('127.0.0.1', 0))
print(*[x.getsockname()[1] for x in s])")
host=$(hostname -s)
mkdir -p "$work/state" "$work/spool" "$work/out"
# One node of 8 CPUs whatever the machine has (config_overrides: slurmd reports the configured
# hardware), so that the split PPO job's 8 tasks fit; no cgroups (proctrack/linuxproc, task/none).
export SLURM_CONF=$work/slurm.conf
cat > "$SLURM_CONF" << CONF
ClusterName=n3rlhftest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
MinJobAge=3600
KillWait=5
NodeName=n3node NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=n3node Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -D -f "$SLURM_CONF" > "$work/slurmctld.stdout" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N n3node > "$work/slurmd.stdout" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 1 150); do
  state=$(sinfo -h -n n3node -o %T 2> /dev/null)
  [[ $state == idle ]] && break
  sleep 0.2
done
if [[ $state != idle ]]; then
  echo "FAIL: the Slurm node never became idle (state '$state')"
  tail -20 "$work/slurmctld.log" "$work/slurmd.log" "$work/slurmctld.stdout" "$work/slurmd.stdout" 2> /dev/null
  exit 1
fi
echo "slurm: slurmctld on 127.0.0.1:$ctld_port, slurmd on :$slurmd_port, node n3node idle"

# A GRPO job small enough for 2 ranks here (the tiny llama fixture, a rule reward).
fixtures=$source_dir/tests/fixtures/hf
write_job() {  # DIR [EXTRA_HYPERPARAMETER_TEXT]
  mkdir -p "$1"
  python3 - "$1/prompts.jsonl" << 'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(16):
        out.write(json.dumps({"prompt": f"Count to {i % 9 + 1}:"}) + "\n")
PY
  cat > "$1/job.n3" << JOB
train rlhf "SlurmGrpo" {
  base_model: "$fixtures/models/llama_tiny"
  tokenizer: "$fixtures/tokenizers/llama3_regex_bytelevel"
  algorithm: "grpo"
  dataset: "$1/prompts.jsonl"
  rewards: [ regex(pattern: "[0-9]") ]
  hyperparameters: { learning_rate: 1e-2  max_steps: 3  lr_scheduler: "constant"  seed: 3 ${2:-} }
  ppo: { rollout_batch_size: 4  mini_batch_size: 16  ppo_epochs: 1  max_new_tokens: 4 }
  grpo: { num_generations: 4  beta: 0.0 }
  logging: { tracker: "jsonl"  log_interval: 1  save_interval: 3 }
  output: { dir: "$1/out" }
  distributed: { strategy: "zero2"  layout: { policy: 1  rollout: 1 } }
}
JOB
}

# sbatch --wait from DIR with the given environment and arguments; sets job_id, status, log.
submit() {  # NAME DIR ENV_ASSIGNMENTS SBATCH_AND_SCRIPT_ARGS...
  local name=$1 dir=$2 env_assignments=$3
  shift 3
  log=$work/out/$name.log
  local ids envs
  read -r -a envs <<< "$env_assignments"  # NAME=value words (the paths here have no spaces)
  ids=$(cd "$dir" && env -u N3RLHF_HOME -u N3RLHF_BIN -u N3RLHF_LAUNCHER -u RLHF_BASE_MODEL -u RLHF_DATASET_PATH \
        -u RLHF_OUTPUT_DIR "${envs[@]}" timeout 600 sbatch --parsable --wait --output="$log" "$@" 2> "$work/out/$name.sbatch")
  status=$?
  job_id=${ids%%;*}
  if [[ $status -eq 124 ]]; then
    scancel "$job_id" 2> /dev/null
    fail "$name: the job did not end within 600 s"
  fi
  record=$(scontrol show job "$job_id" 2> /dev/null)
  echo "$name: job $job_id, sbatch exit $status, $(grep -o 'JobState=[A-Z_]*' <<< "$record") $(grep -o ' ExitCode=[0-9:]*' <<< "$record")"
}
expect_in_log() {  # CASE TEXT
  grep -qF -- "$2" "$log" || fail "$1: '$2' not in the job's log: $(tail -30 "$log"; cat "$work/out/$1.sbatch")"
}
expect_trained() {  # CASE DIR LAUNCHER
  [[ $status -eq 0 ]] || fail "$1: exit status $status"
  grep -q 'JobState=COMPLETED' <<< "$record" || fail "$1: Slurm's record is not COMPLETED: $record"
  grep -q ' ExitCode=0:0' <<< "$record" || fail "$1: Slurm's exit code is not 0:0"
  expect_in_log "$1" "n3rlhf.sbatch: launching with $3"
  expect_in_log "$1" "job \"SlurmGrpo\": grpo on 2 rank(s)"
  expect_in_log "$1" "trained \"SlurmGrpo\": 3 steps (to step 3)"
  local records
  records=$(grep -c '"loss"' "$2/out/logs/metrics.jsonl" 2> /dev/null)
  [[ $records -eq 3 ]] || fail "$1: metrics.jsonl has ${records:-no} training records, not 3"
  [[ -s $2/out/model.safetensors ]] || fail "$1: no model.safetensors in output.dir"
}

bin_env=""
[[ $bin == "$source_dir/build/bin" ]] || bin_env="N3RLHF_BIN=$bin"
elsewhere=$work/elsewhere
mkdir -p "$elsewhere"

for case_name in "${cases[@]}"; do
  dir=$work/$case_name
  case "$case_name" in
    mpirun)
      write_job "$dir"
      submit mpirun "$source_dir" "N3RLHF_LAUNCHER=mpirun $bin_env" --ntasks-per-node=2 --cpus-per-task=1 \
        --gpus-per-node=0 launch/slurm/n3rlhf.sbatch "$dir/job.n3"
      expect_trained mpirun "$dir" mpirun
      ;;
    srun)
      write_job "$dir"
      # A relative job path: read from the submission directory.
      cp "$dir/job.n3" "$elsewhere/srun_job.n3"
      submit srun "$elsewhere" "N3RLHF_HOME=$source_dir $bin_env" --ntasks-per-node=2 --cpus-per-task=1 \
        --gpus-per-node=0 "$source_dir/launch/slurm/n3rlhf.sbatch" srun_job.n3
      expect_trained srun "$dir" "srun --mpi=pmix"
      ;;
    nohome)
      write_job "$dir"
      submit nohome "$elsewhere" "$bin_env" --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 \
        "$source_dir/launch/slurm/n3rlhf.sbatch" "$dir/job.n3"
      [[ $status -eq 2 ]] || fail "nohome: exit status $status, not 2"
      grep -q ' ExitCode=2:0' <<< "$record" || fail "nohome: Slurm's exit code is not 2:0"
      expect_in_log nohome "cannot find the n3rlhf project: run sbatch from its root or set N3RLHF_HOME (submitted from $elsewhere)"
      ;;
    invalid)
      write_job "$dir" "lerning_rate: 1e-3"
      submit invalid "$source_dir" "$bin_env" --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 \
        launch/slurm/n3rlhf.sbatch "$dir/job.n3"
      [[ $status -eq 2 ]] || fail "invalid: exit status $status, not 2"
      expect_in_log invalid "error[RLHF001]: unknown key 'lerning_rate'"
      ! grep -q "launching with" "$log" || fail "invalid: ranks were started for an invalid job"
      ;;
    default)
      # The script's own #SBATCH lines but for the GPUs and CPUs this node lacks: 8 tasks.
      submit default "$source_dir" "$bin_env" --gpus-per-node=0 --cpus-per-task=1 launch/slurm/n3rlhf.sbatch --dry-run
      [[ $status -eq 0 ]] || fail "default: exit status $status"
      expect_in_log default "n3rlhf.sbatch: job $source_dir/examples/ppo.n3 on 8 rank(s), 1 node(s)"
      expect_in_log default "plan for job \"HelpfulPPO\" (8 ranks)"
      for role in policy rollout reference reward; do expect_in_log default "roles=$role"; done
      ;;
    *) fail "unknown case $case_name" ;;
  esac
done

if [[ $failures -ne 0 ]]; then
  echo "--- slurmctld.log"; tail -15 "$work/slurmctld.log"
  echo "--- slurmd.log"; tail -15 "$work/slurmd.log"
  echo "$failures failure(s)"
  exit 1
fi
echo "slurm_test: ${#cases[@]} case(s) passed"
