# schemathesis_check.py: fuzzes a running `n3rlhf serve` (SQLite, then PostgreSQL) from the
# OpenAPI document it serves, with pip schemathesis: no 5xx, every status, content type and
# response body as documented. Jobs that pass validation start /bin/false instead of mpirun.
# Usage: schemathesis_check.py N3RLHF_BINARY [MAX_EXAMPLES]
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def fuzz(binary, store, work, examples):
    serve = harness.Serve(binary, store, work, extra=["--mpirun", "/bin/false"])
    try:
        schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        result = subprocess.run([schemathesis, "run", serve.url + "/openapi.json", "--url", serve.url,
                                 "-H", "Authorization: Bearer " + harness.TOKENS["all"], "--checks", CHECKS,
                                 "-n", str(examples), "--seed", "1234"],
                                capture_output=True, text=True)
        print(result.stdout[-6000:])
        if result.returncode != 0:
            print(result.stderr[-3000:])
            raise SystemExit(f"schemathesis found problems ({store.split(':')[0]})")
        status, body = serve.request("GET", "/health")
        assert status == 200, body  # still up after the fuzzing
    finally:
        serve.stop()


def main(binary, examples):
    with tempfile.TemporaryDirectory() as work:
        fuzz(binary, f"sqlite:{work}/fuzz.db", work, examples)
    with tempfile.TemporaryDirectory() as work, harness.postgres() as url:
        fuzz(binary, url, work, examples)
    print("schemathesis_check: ok on sqlite and postgresql")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50)
