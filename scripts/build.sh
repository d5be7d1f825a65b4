#!/usr/bin/env bash
# Configures (once) and builds n3rlhf in build/ with Ninja. Incremental: an up-to-date tree
# rebuilds nothing. Release by default (RelWithDebInfo doubles the compile time of the libtorch
# code); N3RLHF_BUILD_TYPE, N3RLHF_BUILD_DIR and N3RLHF_CMAKE_ARGS change type, directory, options.
# Arguments are ninja targets (scripts/build.sh n3rlhf n3rlhf-dist); none builds everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${N3RLHF_BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # shellcheck disable=SC2086
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${N3RLHF_BUILD_TYPE:-Release} ${N3RLHF_CMAKE_ARGS:-} > "$BUILD_DIR.configure.log" 2>&1 \
    || { cat "$BUILD_DIR.configure.log"; exit 1; }
fi
ninja -C "$BUILD_DIR" ${N3RLHF_JOBS:+-j "$N3RLHF_JOBS"} "$@"
