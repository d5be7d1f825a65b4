#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh), builds, and runs every test but the `gpu` ones (those
# run too when a GPU is visible): the `faults` drills (docs/reliability.md) and the bounded `fuzz`
# run included. Extra arguments go to ctest, e.g. scripts/test.sh -L mpi or scripts/test.sh -L faults.
# The last line printed is how long each phase took (CI's budget is 45 minutes in all).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
./scripts/setup.sh
setup_seconds=$((SECONDS - started))
./scripts/build.sh
build_seconds=$((SECONDS - started - setup_seconds))
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Tests run in parallel; MPI tests oversubscribe the cores, so keep the pool small.
exclude=()
if ! nvidia-smi -L > /dev/null 2>&1; then exclude=(-LE gpu); fi
cd "${N3RLHF_BUILD_DIR:-build}"
status=0
ctest --output-on-failure -j "${N3RLHF_TEST_JOBS:-2}" "${exclude[@]}" "$@" || status=$?
echo "test.sh: setup ${setup_seconds}s, build ${build_seconds}s, tests $((SECONDS - started - setup_seconds - build_seconds))s, exit status ${status}"
exit "$status"
