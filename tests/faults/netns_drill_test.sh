#!/usr/bin/env bash
# netns_drill_test.sh: several hosts on one machine. Each rank gets a network namespace of its own
# (its own address), joined to the others by veth links on a bridge; mpirun starts the remote
# rank through a small rsh agent around `ip netns exec`, and the ranks talk over TCP. Drills:
#   delay  - a link with 20 ms delay and 1% loss (tc netem): the job is slower but finishes;
#   cut    - the link of host 1 goes down after checkpoint 2: the surviving rank reports
#            RLHF014 and every process on every host ends within the timeout plus a margin;
#   killed - every process of host 1 is SIGKILLed after checkpoint 2: the job ends at once.
# In each, checkpoint 2 stays valid. Exit 77 (ctest: skipped) with the reason when namespaces
# cannot be made here (no root, no CAP_NET_ADMIN, no iproute2).
#   netns_drill_test.sh BIN_DIR SOURCE_DIR [DRILL...]
set -uo pipefail
bin=$1
source_dir=$2
shift 2
drills=("$@")
[[ ${#drills[@]} -eq 0 ]] && drills=(delay cut killed)

prefix="n3f$$"
timeout_s=3
margin_s=20
work=$(mktemp -d /tmp/n3rlhf-netns-XXXXXX)
failures=0

skip() { echo "SKIP: $*"; rm -rf "$work"; exit 77; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v tc >/dev/null || skip "tc (iproute2) is not installed"
if ! probe=$(ip netns add "${prefix}probe" 2>&1); then skip "cannot create network namespaces here: $probe"; fi
ip netns del "${prefix}probe"

cleanup() {
  for ns in "${prefix}h0" "${prefix}h1" "${prefix}sw"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Two hosts and a switch namespace with the bridge.
ip netns add "${prefix}sw" && ip -n "${prefix}sw" link add br0 type bridge && ip -n "${prefix}sw" link set br0 up \
  || skip "cannot create a bridge in a namespace"
for i in 0 1; do
  ns="${prefix}h$i"
  ip netns add "$ns"
  ip link add "${prefix}v$i" type veth peer name "${prefix}p$i" || skip "cannot create veth links"
  ip link set "${prefix}v$i" netns "$ns" name eth0
  ip link set "${prefix}p$i" netns "${prefix}sw" name "port$i"
  ip -n "$ns" addr add "10.201.0.$((i + 1))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "${prefix}sw" link set "port$i" master br0 up
done
# Reachable: a connection to a closed port is refused at once rather than timing out.
reachable() {
  ip netns exec "$1" python3 -c "
import socket, sys
try:
    socket.create_connection(('$2', 9), timeout=3)
except ConnectionRefusedError:
    sys.exit(0)
except OSError:
    sys.exit(1)"
}
reachable "${prefix}h0" 10.201.0.2 || skip "the namespaces cannot reach each other"

# The rsh agent: Open MPI calls it as `agent [options] HOST COMMAND...`.
cat > "$work/agent" <<AGENT
#!/bin/sh
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host=\$1; shift
case "\$host" in 10.201.0.1) ns=${prefix}h0 ;; 10.201.0.2) ns=${prefix}h1 ;; *) echo "agent: unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname n3f-\$host; \$*"
AGENT
chmod +x "$work/agent"
printf '10.201.0.1 slots=1\n10.201.0.2 slots=1\n' > "$work/hosts"

fixtures="$source_dir/tests/fixtures/hf"
write_job() {  # DIR TIMEOUT_S
  mkdir -p "$1"
  python3 - "$1/train.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(24):
        out.write(json.dumps({"prompt": f"Question {i}: is {i % 7} small?", "chosen": " The answer is yes.", "rejected": " Maybe no!"}) + "\n")
PY
  cat > "$1/job.n3" <<JOB
train rlhf "Netns" {
  base_model: "$fixtures/models/llama_tiny"
  tokenizer: "$fixtures/tokenizers/llama3_regex_bytelevel"
  algorithm: "dpo"
  dataset: "$1/train.jsonl"
  hyperparameters: { learning_rate: 1e-3  batch_size: 4  max_steps: 6  max_length: 48  max_prompt_length: 24  lr_scheduler: "constant"  seed: 7 }
  data: { eval_fraction: 0.0  prepared_dir: "$1/prepared" }
  logging: { tracker: "jsonl"  log_interval: 1  save_interval: 2 }
  output: { dir: "$1/out" }
  distributed: { collective_timeout_s: $2  backend: "mpi" }
}
JOB
  "$bin/n3rlhf" prepare "$1/job.n3" >/dev/null  # once, outside the drill
}

# mpirun inside host 0. OOB keepalives of a few seconds let mpirun and the remote daemon notice
# a silent peer (defaults: 300 s idle, then 9 probes 20 s apart).
launch() {  # DIR -> runs in the background, pid in $job_pid
  ip netns exec "${prefix}h0" unshare --uts sh -c "hostname n3f-10.201.0.1; exec env OMPI_ALLOW_RUN_AS_ROOT=1 \
      OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --hostfile $work/hosts -np 2 --map-by node \
      --mca plm_rsh_agent $work/agent --mca btl tcp,self --mca btl_tcp_if_include 10.201.0.0/24 \
      --mca oob_tcp_if_include 10.201.0.0/24 --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1 \
      --mca oob_tcp_keepalive_probes 3 $bin/n3rlhf-dist $1/job.n3" > "$1/log" 2>&1 &
  job_pid=$!
}

wait_for_file() {  # PATH SECONDS
  for _ in $(seq 1 $(($2 * 10))); do [[ -e $1 ]] && return 0; sleep 0.1; done
  return 1
}

# Waits until the job and every process in `namespaces` are gone; echoes the seconds taken.
wait_until_gone() {  # SECONDS NAMESPACE... -> returns 1 if something outlived them
  local limit=$1 start=$SECONDS
  shift
  while (( SECONDS - start < limit )); do
    local left=""
    for ns in "$@"; do left+=$(ip netns pids "$ns"); done
    if ! kill -0 "$job_pid" 2>/dev/null && [[ -z $left ]]; then echo $((SECONDS - start)); return 0; fi
    sleep 0.2
  done
  echo $((SECONDS - start)); return 1
}

describe_processes() {  # NAMESPACE
  for pid in $(ip netns pids "$1"); do echo "  $pid: $(tr '\0' ' ' < /proc/$pid/cmdline | cut -c1-120)"; done
}

checkpoint_valid() {  # DIR STEP: the manifest lists every file with its size
  python3 - "$1/out/checkpoints/checkpoint-$2" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
for f in m["files"]:
    p = os.path.join(d, f["path"])
    assert os.path.getsize(p) == f["size"], p
    assert hashlib.sha256(open(p, "rb").read()).hexdigest() == f["sha256"], p
PY
}

for drill in "${drills[@]}"; do
  dir="$work/$drill"
  # The slowed link gets a timeout it can meet; the others the short one they test.
  if [[ $drill == delay ]]; then write_job "$dir" 60; else write_job "$dir" "$timeout_s"; fi
  case "$drill" in
    delay)
      # netem (delay and loss) where the kernel has it; otherwise tbf, a 20 Mbit/s token bucket.
      if ip netns exec "${prefix}h1" tc qdisc add dev eth0 root netem delay 20ms loss 1% 2>/dev/null; then
        shaping="netem: 20 ms delay, 1% loss"
      elif ip netns exec "${prefix}h1" tc qdisc add dev eth0 root tbf rate 20mbit burst 32kb latency 100ms; then
        shaping="tbf: 20 Mbit/s (this kernel has no netem)"
      else
        fail "delay: neither netem nor tbf can shape the link"; continue
      fi
      start=$SECONDS
      launch "$dir"
      wait "$job_pid"; status=$?
      ip netns exec "${prefix}h1" tc qdisc del dev eth0 root
      [[ $status -eq 0 ]] || fail "delay: the job failed (status $status) on a slow link: $(tail -20 "$dir/log")"
      grep -q "trained \"Netns\": 6 steps" "$dir/log" || fail "delay: no summary line: $(tail -20 "$dir/log")"
      echo "delay: finished in $((SECONDS - start)) s over a shaped link ($shaping), status $status"
      ;;
    cut|killed)
      launch "$dir"
      if ! wait_for_file "$dir/out/checkpoints/checkpoint-2/manifest.json" 120; then
        fail "$drill: checkpoint 2 never appeared: $(tail -20 "$dir/log")"; kill -9 "$job_pid"; continue
      fi
      if [[ $drill == cut ]]; then
        ip -n "${prefix}sw" link set port1 down
      else
        for pid in $(ip netns pids "${prefix}h1"); do kill -9 "$pid" 2>/dev/null; done
      fi
      # Every process on every host that can still be reached ends within the timeout plus a
      # margin (after a cut, host 1 cannot be reached: its processes are checked below).
      reachable=("${prefix}h0")
      [[ $drill == killed ]] && reachable+=("${prefix}h1")
      if ! took=$(wait_until_gone $((timeout_s + 6 + margin_s)) "${reachable[@]}"); then
        fail "$drill: processes outlived the timeout plus margin ($took s):$(describe_processes "${prefix}h0")"
      fi
      wait "$job_pid" 2>/dev/null; status=$?
      [[ $status -ne 0 ]] || fail "$drill: the job exited 0"
      if [[ $drill == cut ]]; then
        grep -q "\[RLHF014\]" "$dir/log" || fail "cut: no RLHF014 from the surviving rank: $(tail -30 "$dir/log")"
        grep -q "ranks that did not arrive: rank 1\|peer that did not match it: rank 1" "$dir/log" \
          || fail "cut: rank 1 not named: $(tail -30 "$dir/log")"
        # The cut-off host's rank ends too (its own timeout, then the exit wait); Open MPI's
        # daemon there cannot reach mpirun and stays until the link is back.
        sleep_for=$((timeout_s + 6 + margin_s - took)); (( sleep_for > 0 )) || sleep_for=1
        for _ in $(seq 1 $((sleep_for * 5))); do
          [[ -z $(ip netns pids "${prefix}h1" | xargs -r -I{} grep -l n3rlhf-dist /proc/{}/cmdline 2>/dev/null) ]] && break
          sleep 0.2
        done
        if [[ -n $(ip netns pids "${prefix}h1" | xargs -r -I{} grep -l n3rlhf-dist /proc/{}/cmdline 2>/dev/null) ]]; then
          fail "cut: the rank on the cut-off host is still running:$(describe_processes "${prefix}h1")"
        fi
        echo "cut: left on the cut-off host:$(describe_processes "${prefix}h1")"
        ip -n "${prefix}sw" link set port1 up
        # The next drill starts on a healed link: the stale daemon gone and each host reaching the
        # other again (a drill launched at once sometimes had its daemon fail to call mpirun back).
        for pid in $(ip netns pids "${prefix}h1"); do kill -9 "$pid" 2>/dev/null; done
        for _ in $(seq 1 50); do
          reachable "${prefix}h0" 10.201.0.2 && reachable "${prefix}h1" 10.201.0.1 && break
          sleep 0.2
        done
      fi
      checkpoint_valid "$dir" 2 || fail "$drill: checkpoint 2 is not valid after the drill"
      echo "$drill: every process ended ${took}s after the fault (timeout ${timeout_s}s), status $status; what the user saw:"
      grep -v "^\[20..-..-.. ..:..:......\] \[.*\] \[info\]\|^step " "$dir/log" | sed 's/^/    /' | head -40
      ;;
    *) fail "unknown drill $drill" ;;
  esac
done

if (( failures > 0 )); then echo "$failures drill(s) failed"; exit 1; fi
echo "all network drills passed: ${drills[*]}"
