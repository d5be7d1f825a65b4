#!/usr/bin/env bash
# run_fuzzers.sh: builds the libFuzzer targets of tests/fuzz with clang++ in build-fuzz/ and runs
# each for a bounded time from its seed corpus. Exit status 1 when any target finds a crash.
#   tests/fuzz/run_fuzzers.sh [-t SECONDS] [-j JOBS] [TARGET ...]   (default: every target, 20 s each)
# New interesting inputs go to build-fuzz/corpus/TARGET (the seeds in tests/fuzz/corpus/TARGET
# are only read); crash reproducers go to build-fuzz/artifacts/TARGET/. Replay one with
#   build-fuzz/TARGET build-fuzz/artifacts/TARGET/crash-...
set -euo pipefail

seconds=20
jobs=1
while getopts "t:j:" option; do
  case "$option" in
    t) seconds="$OPTARG" ;;
    j) jobs="$OPTARG" ;;
    *) echo "usage: $0 [-t SECONDS] [-j JOBS] [TARGET ...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="$root/build-fuzz"
compiler="${CXX_FUZZ:-$(command -v clang++ || true)}"
if [[ -z "$compiler" ]]; then
  echo "run_fuzzers.sh: clang++ not found (set CXX_FUZZ)" >&2
  exit 2
fi

if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S "$root/tests/fuzz" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$compiler" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
if [[ $# -eq 0 ]]; then
  mapfile -t targets < <(grep -v '^$' "$build/fuzz_targets.txt")
else
  targets=("$@")
fi
ninja -C "$build" -j "${jobs}" "${targets[@]}"

failed=()
for target in "${targets[@]}"; do
  seeds="$root/tests/fuzz/corpus/$target"
  corpus="$build/corpus/$target"
  artifacts="$build/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  options=(-max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
           -artifact_prefix="$artifacts/")
  dictionary="$root/tests/fuzz/dictionaries/$target.dict"
  [[ -f "$dictionary" ]] && options+=(-dict="$dictionary")
  echo "== $target: ${seconds}s"
  if ! "$build/$target" "${options[@]}" "$corpus" $( [[ -d "$seeds" ]] && echo "$seeds" ) 2>"$build/$target.log"; then
    tail -n 40 "$build/$target.log" >&2
    failed+=("$target")
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added|cov:" "$build/$target.log" | tail -n 3
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzers that found a crash: ${failed[*]} (reproducers in $build/artifacts/)" >&2
  exit 1
fi
echo "all fuzzers ran ${seconds}s without a crash: ${targets[*]}"
