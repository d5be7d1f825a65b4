#!/usr/bin/env python3
"""make_torch_pickle_seeds.py: writes the seed corpus of torch_pickle_fuzz, the data.pkl records of
state dicts that pip torch saves (what transformers' save_pretrained(safe_serialization=False)
leaves): an OrderedDict with _metadata, float32/float16/bfloat16/int64/bool tensors, views that
share one storage with offsets and strides, an empty tensor, nn.Parameters and a 0-d tensor.
    .venv/bin/python tests/fuzz/make_torch_pickle_seeds.py tests/fuzz/corpus/torch_pickle_fuzz
"""
import collections
import io
import sys
import zipfile
from pathlib import Path

import torch


def data_pkl(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        return archive.read(name)


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    (out / "module_state_dict.pkl").write_bytes(data_pkl(model.state_dict()))
    base = torch.arange(24, dtype=torch.float32)
    shared = collections.OrderedDict(
        [("whole", base), ("matrix", base.view(4, 6)), ("transposed", base.view(4, 6).t()),
         ("offset", base[5:11]), ("strided", base[::3]), ("empty", torch.empty(0, 5)), ("scalar", torch.tensor(2.5))])
    (out / "shared_views.pkl").write_bytes(data_pkl(shared))
    dtypes = {"f16": torch.ones(3, dtype=torch.float16), "bf16": torch.ones(2, 2, dtype=torch.bfloat16),
              "i64": torch.arange(5), "mask": torch.tensor([True, False]), "f64": torch.zeros(2, dtype=torch.float64)}
    (out / "dtypes.pkl").write_bytes(data_pkl(dtypes))
    parameters = collections.OrderedDict([("weight", torch.nn.Parameter(torch.ones(2, 2)))])
    (out / "parameters.pkl").write_bytes(data_pkl(parameters))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "corpus" / "torch_pickle_fuzz"))
