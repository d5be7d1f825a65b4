# read_export.py: the peer that reads a feedback export the way a TRL user would: pandas (via
# pyarrow) for Parquet, pandas for JSONL; prints {"columns": [...], "rows": [...], "dtypes": ...}.
import json
import sys

import pandas as pd
import pyarrow.parquet as pq

path, kind = sys.argv[1], sys.argv[2]
if kind == "parquet":
    table = pq.read_table(path)
    frame = pd.read_parquet(path)
    schema = {f.name: str(f.type) for f in table.schema}
else:
    frame = pd.read_json(path, lines=True, dtype=False) if open(path).read().strip() else pd.DataFrame()
    schema = {}
print(json.dumps({"columns": list(frame.columns), "rows": frame.to_dict(orient="records"), "schema": schema}))
