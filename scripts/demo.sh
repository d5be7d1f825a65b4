#!/usr/bin/env bash
# The README's first command: sets up the machine, builds, and runs the main job. Until the
# training capability lands this validates every bundled example and plans a 2-rank DPO job.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
for job in examples/*.n3; do
  build/bin/n3rlhf validate --no-env "$job" > /dev/null 2> /tmp/n3rlhf-validate.log \
    || { cat /tmp/n3rlhf-validate.log; exit 1; }
  echo "valid: $job"
done
mpirun --oversubscribe -np 2 build/bin/n3rlhf-dist examples/dpo.n3 --dry-run
