# interleaved_runs.py: one route on one store, `n3rlhf serve` and the peer (FastAPI + SQLAlchemy +
# uvicorn, PEER_WORKERS' first value, default 4) run alternately three times each with wrk, and the
# medians compared: on a shared machine whose load swings, pairs run back to back compare fairly.
# Usage: interleaved_runs.py N3RLHF_BINARY post|export [postgresql|sqlite]
import contextlib
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "service", "py"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
import run_service_benchmark as bench  # noqa: E402


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

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    print(f"{store} {route}: n3rlhf {median(n3, 'rps'):.0f} req/s p99 {median(n3, 'p99'):.1f} ms; peer ({workers} "
          f"workers) {median(peer, 'rps'):.0f} req/s p99 {median(peer, 'p99'):.1f} ms; "
          f"ratio {median(n3, 'rps') / median(peer, 'rps'):.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "postgresql")
