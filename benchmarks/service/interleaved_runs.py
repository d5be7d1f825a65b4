# interleaved_runs.py: one route on one store, `n3rlhf serve` and the peer (FastAPI + SQLAlchemy +
# uvicorn, PEER_WORKERS' first value, default 4) run alternately three times each with wrk, and the
# medians compared: on a shared machine whose load swings, pairs run back to back compare fairly.
# For the PostgreSQL export it then measures the database alone: pgbench runs the service's
# one-page export statement over 16 connections, the exports per second PostgreSQL can give any
# client on this machine (the service, the peer and wrk share its 2 cores with it).
# Usage: interleaved_runs.py N3RLHF_BINARY post|export [postgresql|sqlite]
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "service", "py"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import run_service_benchmark as bench  # noqa: E402


# The service's first-page export statement (src/service/postgresql_store.cpp, "scan_pairs"),
# with the benchmark's agent and no since/until.
EXPORT_STATEMENT = ("SELECT prompt, response_chosen, response_rejected, id FROM rlhf_feedback WHERE agent_id = 'export' "
                    "AND ('' = '' OR created_at >= NULLIF('', '')::timestamptz) "
                    "AND ('' = '' OR created_at < NULLIF('', '')::timestamptz) ORDER BY created_at, id LIMIT 2001;\n")


def database_ceiling(url, work, seconds=10, clients=16):
    """Exports per second PostgreSQL serves to pgbench (prepared statements, 2 client threads)."""
    script = os.path.join(work, "export.sql")
    with open(script, "w") as f:
        f.write(EXPORT_STATEMENT)
    parts = urllib.parse.urlparse(url)
    command = [os.path.join(harness._pg_bin(), "pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
               "-T", str(seconds), "-f", script, "-h", parts.hostname, "-p", str(parts.port), "-U", parts.username,
               parts.path.lstrip("/")]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(re.search(r"tps = ([0-9.]+)", out).group(1))


def main(binary, route, store):
    path, script = (("/api/rlhf/feedback", "post_feedback.lua") if route == "post"
                    else ("/api/rlhf/feedback/export?agent_id=export", "export.lua"))
    workers = int(os.environ.get("PEER_WORKERS", "4").split(",")[0])
    n3, peer = [], []
    with tempfile.TemporaryDirectory() as work, (
            harness.postgres() if store == "postgresql" else contextlib.nullcontext(f"sqlite:{work}/bench.db")) as url:
        for i in range(3):
            serve = harness.Serve(binary, url, work)
            if i == 0:
                bench.seed_export_rows(serve)
            n3.append(bench.wrk(serve.url + path, script, 10, 32))
            serve.stop()
            process, peer_url = bench.peer(url, work, workers)
            peer.append(bench.wrk(peer_url + path, script, 10, 32))
            process.terminate()
            process.wait()
            print(i, "n3rlhf", n3[-1], "peer", peer[-1], flush=True)
        ceiling = database_ceiling(url, work) if store == "postgresql" and route == "export" else None

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    print(f"{store} {route}: n3rlhf {median(n3, 'rps'):.0f} req/s p99 {median(n3, 'p99'):.1f} ms; peer ({workers} "
          f"workers) {median(peer, 'rps'):.0f} req/s p99 {median(peer, 'p99'):.1f} ms; "
          f"ratio {median(n3, 'rps') / median(peer, 'rps'):.2f}")
    if ceiling is not None:
        print(f"PostgreSQL alone (pgbench, the service's export statement, 16 connections): {ceiling:.0f} exports/s = "
              f"{ceiling / median(peer, 'rps'):.2f}x the peer's throughput; n3rlhf serve reaches "
              f"{100 * median(n3, 'rps') / ceiling:.0f}% of it")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "postgresql")
