#!/usr/bin/env bash
# gpu_session.sh: everything one lent GPU session (the device tool: one H100/H200, 15 minutes of
# device time in all) should check and time, in one command. Two steps:
#
#   benchmarks/gpu_session.sh pack [BUILD_DIR=build]
#       here, after a build: strips the GPU test and benchmark binaries into .device/ (ignored by
#       git through .git/info/exclude; under the device tool's 64 MiB) with the shared libraries the
#       device machine lacks (Boost.Program_options) and the fixtures the tests read.
#   benchmarks/gpu_session.sh run        (on the device machine; run(command=..., carry=[".device"]))
#       the gpu-labelled tests (NF4 dequantization kernel, bf16 transformer), then the DPO step of
#       the TinyLlama-1.1B shape, 8 pairs x 512 tokens, against PyTorch eager transformers on the same
#       card: full fine-tuning with shared prompts and padded, LoRA and QLoRA against transformers +
#       PEFT LoRA; then the sharding benchmark on one rank (two NCCL ranks cannot share one GPU).
#       The pip torch of the device machine provides libtorch; the summary table comes last.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  pack)
    build=${2:-build}
    rm -rf .device && mkdir -p .device/bin .device/lib .device/tests
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
    for binary in dpo_step_benchmark sharding_benchmark; do strip -o ".device/bin/$binary" "$build/bin/$binary"; done
    strip -o .device/tests/quant_test "$build/tests/quant/quant_test"
    strip -o .device/tests/transformer_test "$build/tests/model/transformer_test"
    cp -L /usr/lib/x86_64-linux-gnu/libboost_program_options.so.1.74.0 .device/lib/
    # The peers' Python packages (transformers, peft and what they import, at the venv's versions;
    # not torch, numpy or CUDA, which the device machine has), as wheels for its Python 3.12, in
    # case its environment lacks them: it cannot reach PyPI.
    .venv/bin/python - > .device/wheels.txt <<'PY'
import re
from importlib import metadata
skip = re.compile(r"^(torch|numpy|nvidia-.*|triton|setuptools|sympy|networkx|jinja2|markupsafe|mpmath)$")
seen, todo = {}, ["transformers", "peft"]
while todo:
    name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
    if name in seen or skip.match(name):
        continue
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    seen[name] = dist.version
    todo += [r for r in (dist.requires or []) if "extra ==" not in r]
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PY
    .venv/bin/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        -d .device/wheels -r .device/wheels.txt
    du -sh .device .device/wheels
    ;;
  run)
    [[ -d .device/bin ]] || { echo "no .device/: run 'benchmarks/gpu_session.sh pack' here and carry .device" >&2; exit 2; }
    python=${N3RLHF_BENCH_PYTHON:-python3}
    if ! "$python" -c 'import transformers, peft' 2> /dev/null; then
      "$python" -m pip install --quiet --no-index --no-deps --target /tmp/n3rlhf-pydeps .device/wheels/*.whl
      export PYTHONPATH="/tmp/n3rlhf-pydeps${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$python" -c 'import torch, transformers, peft; print("peers: torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
    torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
    export LD_LIBRARY_PATH="$PWD/.device/lib:$torch_lib:${LD_LIBRARY_PATH:-}"
    export N3RLHF_SOURCE_DIR="$PWD"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
    out=${OUT:-/tmp/n3rlhf-gpu}; mkdir -p "$out"
    summary=()
    for test in "quant_test --gtest_filter=QuantGpu.*" "transformer_test --gtest_filter=TransformerGpu.*"; do
      if .device/tests/$test > "$out/${test%% *}.log" 2>&1; then summary+=("PASS ${test}"); else summary+=("FAIL ${test} (see ${test%% *}.log)"); fi
      tail -3 "$out/${test%% *}.log"
    done
    step() {  # LAYOUT ADAPTER
      local line
      line=$(N3RLHF_BENCH_PYTHON="$python" benchmarks/run_dpo_step_benchmark.sh tinyllama-1.1b 8 512 5 .device "$1" "$2" 2>&1 | tee -a "$out/dpo_step.log" | tail -1)
      summary+=("$line")
    }
    step shared none; step padded none; step shared lora; step shared qlora
    for strategy in zero2 fsdp; do  # one rank: memory and step time of each strategy on the card
      .device/bin/sharding_benchmark "$strategy" tinyllama-1.1b 4 512 3 2>&1 | tail -4 | tee -a "$out/sharding.log" || true
    done
    echo; echo "== summary =="; printf '%s\n' "${summary[@]}"
    ;;
  *)
    echo "usage: benchmarks/gpu_session.sh pack [BUILD_DIR] | run" >&2; exit 2 ;;
esac
