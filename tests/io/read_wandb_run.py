#!/usr/bin/env python3
"""read_wandb_run.py: prints, as one JSON object, what an offline W&B run recorded.

Usage: read_wandb_run.py WANDB_DIR  (the directory given to wandb.init; its wandb/offline-run-*
folders are read, each a run).

W&B 0.31 keeps an offline run in one transaction log, <run folder>/run-<id>.wandb: the file
header ":W&B", magic 0xBEE1, version 0, then leveldb's log format (32 KiB blocks; records of a
little-endian CRC, length, type FULL/FIRST/MIDDLE/LAST and data; the CRC is CRC-32 of the type
byte and the data) whose payloads are wandb's own protobuf messages,
wandb.proto.wandb_internal_pb2.Record. That log is what `wandb sync` uploads; this reader checks
every CRC and decodes every record with wandb's protobuf classes, so a record the sidecar lost or
W&B could not read fails the test. Values are decoded from W&B's value_json; non-finite numbers
are printed as the strings "NaN", "Infinity", "-Infinity".

Output: {"runs": [{"folder", "run_id", "project", "display_name", "tags", "config", "history":
[{"_step": n, name: value, ...}], "summary", "exit_code" (null without an exit record), "records":
{type: count}}]}.
"""

import glob
import json
import math
import os
import struct
import sys
import zlib

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
RECORD_HEADER = 7  # uint32 CRC, uint16 length, uint8 type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
FILE_HEADER = struct.Struct("<4sHB")


def fail(message):
    print(f"read_wandb_run.py: {message}", file=sys.stderr)
    sys.exit(1)


def payloads(path):
    """The payload of every logical record in the transaction log at `path`, CRCs checked."""
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) < FILE_HEADER.size:
        fail(f"{path}: shorter than the file header")
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        fail(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x} {version})")
    offset = FILE_HEADER.size
    pending = None
    while offset < len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < RECORD_HEADER:
            offset += left_in_block  # the block's zero trailer
            continue
        if offset + RECORD_HEADER > len(data):
            fail(f"{path}: a truncated record header at byte {offset}")
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        if crc == 0 and length == 0 and kind == 0:
            offset += left_in_block  # zero padding to the end of the block
            continue
        chunk = data[offset + RECORD_HEADER : offset + RECORD_HEADER + length]
        if len(chunk) != length:
            fail(f"{path}: a truncated record at byte {offset}")
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            fail(f"{path}: CRC mismatch of the record at byte {offset}")
        offset += RECORD_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = bytearray(chunk)
        elif kind == MIDDLE and pending is not None:
            pending += chunk
        elif kind == LAST and pending is not None:
            pending += chunk
            yield bytes(pending)
            pending = None
        else:
            fail(f"{path}: record type {kind} out of order at byte {offset}")


def printable(value):
    """A decoded value as strict JSON: non-finite floats spelled as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: printable(child) for key, child in value.items()}
    if isinstance(value, list):
        return [printable(child) for child in value]
    return value


def item_key(item):
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_run(folder):
    logs = glob.glob(os.path.join(folder, "run-*.wandb"))
    if len(logs) != 1:
        fail(f"{folder}: expected one run-*.wandb, found {len(logs)}")
    run = {"folder": folder, "config": {}, "history": [], "summary": {}, "exit_code": None, "records": {}}
    for payload in payloads(logs[0]):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        run["records"][kind] = run["records"].get(kind, 0) + 1
        if kind == "run":
            run["run_id"] = record.run.run_id
            run["project"] = record.run.project
            run["display_name"] = record.run.display_name
            run["tags"] = list(record.run.tags)
            for item in record.run.config.update:
                run["config"][item_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item_key(item)] = json.loads(item.value_json)
            for item in record.config.remove:
                run["config"].pop(item_key(item), None)
        elif kind == "history":
            row = {item_key(item): json.loads(item.value_json) for item in record.history.item}
            if record.history.HasField("step"):
                row.setdefault("_step", record.history.step.num)
            run["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                run["summary"][item_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    run["config"].pop("_wandb", None)
    return printable(run)


def main():
    if len(sys.argv) != 2:
        fail("usage: read_wandb_run.py WANDB_DIR")
    folders = sorted(glob.glob(os.path.join(sys.argv[1], "wandb", "offline-run-*")))
    print(json.dumps({"runs": [read_run(folder) for folder in folders]}, sort_keys=True))


if __name__ == "__main__":
    main()
