"""quant_peer.py: bitsandbytes (pip, its CPU backend) on the tensors tests/quant/quant_peer_test.cpp
quantized, compared exactly with what n3rlhf produced; then bitsandbytes' own state dicts written
back for the C++ side to load.

usage: quant_peer.py OURS.safetensors BNB_OUT.safetensors

Where bitsandbytes' CPU build runs a native kernel that departs from its own reference algorithm
(8-bit blockwise quantization of the absmax values; 4-bit dequantization of rows that are not a
whole number of blocks), ours is compared with the reference algorithm from bitsandbytes' Python
source, and the native kernel's departure is measured and printed.

OURS holds, per case C: C.input (float32 weight), C.dequantized (our dequantize()), and our
state_dict under C.weight (bitsandbytes' keys). Cases are named nf4_b<block>_dq<0|1>_<name> or
int8_<name>. Every code, absmax, nested absmax, nested code book, offset and dequantized value
must be equal (not close): bitsandbytes' CPU path and ours do the same float32 operations.
"""
import json
import sys

import torch
from safetensors.torch import load_file, save_file

import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

# bitsandbytes' device-independent dequantization (flat blocks, the algorithm of its CUDA kernel),
# without the torch.compile wrapper. Why not only its CPU kernel: in 0.50.2 the native CPU
# dequantize_4bit (AVX-512 build) gives wrong values when a row's length is not a multiple of the
# block (errors of 2.0 on randn weights, larger than any NF4 step), while quantize_4bit is flat.
# We compare with this reference always, and with the CPU kernel where rows hold whole blocks.
reference_dequantize_4bit = _dequantize_4bit_compute.__wrapped__


def reference_quantize_blockwise(values, code, blocksize):
    """bitsandbytes' reference quantize_blockwise, as written in bitsandbytes/backends/default/ops.py
    (0.50.2). Not called through bitsandbytes because its CPU build dispatches to the native kernel,
    which does not always round to the nearest code (the count is printed)."""
    flat = values.reshape(-1).float()
    n = flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = full // blocksize
    com = flat[:full].reshape(blocks, blocksize)
    absmax = com.abs().max(dim=-1)[0]
    scaled = torch.clamp(com * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / am, -1, 1)])
    bounds = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, bounds, out_int32=True).to(torch.uint8), absmax


def equal(name, ours, theirs, failures):
    ours = ours.reshape(-1)
    theirs = theirs.reshape(-1).to(ours.device)
    if ours.dtype != theirs.dtype or ours.numel() != theirs.numel():
        failures.append(f"{name}: ours {ours.dtype}[{ours.numel()}] vs bitsandbytes {theirs.dtype}[{theirs.numel()}]")
        return
    if not torch.equal(ours, theirs):
        mismatched = (ours != theirs).sum().item()
        detail = ""
        if ours.is_floating_point():
            detail = f", max |diff| {(ours - theirs).abs().max().item():.3e}"
        failures.append(f"{name}: {mismatched} of {ours.numel()} differ{detail}")


def main():
    ours_path, out_path = sys.argv[1], sys.argv[2]
    ours = load_file(ours_path)
    cases = sorted({key.split(".")[0] for key in ours})
    failures = []
    written = {}
    compared_values = 0
    cpu_kernel_cases = 0
    kernel_stats = [0, 0, 0]  # absmax codes where the CPU kernel differs from the reference, of all, max steps
    for case in cases:
        weight = ours[f"{case}.input"]
        dequantized = ours[f"{case}.dequantized"]
        key = f"{case}.weight"
        if case.startswith("int8_"):
            codes, scales, _ = F.int8_vectorwise_quant(weight.clone())
            equal(f"{case} int8 codes", ours[key], codes, failures)
            equal(f"{case} SCB", ours[f"{case}.SCB"], scales, failures)
            theirs = F.int8_vectorwise_dequant(codes, scales)
            equal(f"{case} dequantized", dequantized, theirs, failures)
            written[key] = codes.contiguous()
            written[f"{case}.SCB"] = scales.contiguous()
            written[f"{case}.bnb_dequantized"] = theirs.contiguous()
            compared_values += weight.numel()
            continue
        block = int(case.split("_")[1][1:])
        double_quant = case.split("_")[2] == "dq1"
        packed, state = F.quantize_4bit(weight, blocksize=block, compress_statistics=double_quant, quant_type="nf4")
        equal(f"{case} packed codes", ours[key], packed, failures)
        equal(f"{case} quant_map", ours[f"{key}.quant_map"], state.code, failures)
        if double_quant:
            # Ours against bitsandbytes' reference algorithm on bitsandbytes' own NF4 absmax.
            _, plain = F.quantize_4bit(weight, blocksize=block, compress_statistics=False, quant_type="nf4")
            offset = plain.absmax.mean()
            codes, nested_absmax = reference_quantize_blockwise(plain.absmax - offset, state.state2.code, 256)
            equal(f"{case} absmax codes", ours[f"{key}.absmax"], codes, failures)
            equal(f"{case} nested absmax", ours[f"{key}.nested_absmax"], nested_absmax, failures)
            equal(f"{case} nested absmax (CPU kernel)", ours[f"{key}.nested_absmax"], state.state2.absmax, failures)
            equal(f"{case} nested code", ours[f"{key}.nested_quant_map"], state.state2.code, failures)
            state_json = json.loads(bytes(ours[f"{key}.quant_state.bitsandbytes__nf4"].tolist()).decode())
            if state_json["nested_offset"] != state.offset.item():
                failures.append(f"{case} offset: ours {state_json['nested_offset']!r} vs {state.offset.item()!r}")
            # bitsandbytes' native CPU kernel against its reference: how many codes differ, by how much.
            steps = (state.absmax.long() - codes.long()).abs()
            kernel_stats[0] += (steps > 0).sum().item()
            kernel_stats[1] += steps.numel()
            kernel_stats[2] = max(kernel_stats[2], steps.max().item())
            nested_state = F.QuantState(absmax=nested_absmax, code=state.state2.code, blocksize=256, dtype=torch.float32)
            absmax = F.dequantize_blockwise(codes, nested_state) + offset
            # What bitsandbytes itself dequantizes its own (kernel-quantized) state to, for the C++ loader.
            bnb_absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
        else:
            equal(f"{case} absmax", ours[f"{key}.absmax"], state.absmax, failures)
            absmax = bnb_absmax = state.absmax
        theirs = reference_dequantize_4bit(packed.reshape(-1), absmax, state.code, block, weight.shape, torch.float32)
        equal(f"{case} dequantized", dequantized, theirs, failures)
        if weight.shape[-1] % block == 0 and not double_quant:
            equal(f"{case} dequantized (CPU kernel)", dequantized, F.dequantize_4bit(packed, state), failures)
            cpu_kernel_cases += 1
        for name, tensor in state.as_dict(packed=True).items():
            written[f"{key}.{name}"] = tensor.contiguous()
        written[key] = packed.contiguous()
        written[f"{case}.bnb_dequantized"] = reference_dequantize_4bit(
            packed.reshape(-1), bnb_absmax, state.code, block, weight.shape, torch.float32).contiguous()
        compared_values += weight.numel()
    save_file(written, out_path)
    print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}: {len(cases)} cases, "
          f"{compared_values} weights; codes, absmax, nested absmax/code/offset and dequantized values compared "
          f"for exact equality; dequantized also against the CPU kernel in {cpu_kernel_cases} NF4 cases")
    print(f"bitsandbytes' native CPU quantize_blockwise (double quantization) differs from its reference "
          f"algorithm in {kernel_stats[0]} of {kernel_stats[1]} absmax codes, by at most {kernel_stats[2]} code step(s)")
    for failure in failures:
        print("MISMATCH", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
