#!/usr/bin/env bash
# Regenerates the parts of docs/ that come from the code: docs/errors.md (the error catalog) and
# the field table of docs/configuration.md (the config schema). Needs a built build/bin/n3rlhf.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${N3RLHF_BIN:-build/bin}
"$BIN/n3rlhf" explain --markdown > docs/errors.md
table=$("$BIN/n3rlhf" config-reference)
python3 - "$table" <<'PY'
import sys, re
path = "docs/configuration.md"
text = open(path).read()
begin, end = "<!-- BEGIN GENERATED: n3rlhf config-reference -->", "<!-- END GENERATED: n3rlhf config-reference -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + sys.argv[1].strip("\n") + "\n" + end + tail)
PY
echo "docs updated"
