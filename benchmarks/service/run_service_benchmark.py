# run_service_benchmark.py: wrk against `n3rlhf serve` and against the seed's own stack (FastAPI +
# SQLAlchemy on uvicorn, peer_app.py) on the same schema and database, SQLite and PostgreSQL:
# POST /api/rlhf/feedback and GET /api/rlhf/feedback/export (1000 rows, JSONL). The peer runs at
# each worker count of PEER_WORKERS (uvloop + httptools, pinned in requirements.txt; SQLAlchemy pool N3RLHF_PEER_POOL + as many overflow) and is compared at
# its best one per route. Prints requests/s and p50/p99 latency side by side and the ratios.
# Not a test.
# Usage: run_service_benchmark.py N3RLHF_BINARY [SECONDS] [CONNECTIONS]
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "service", "py"))
import harness  # noqa: E402


def wrk(url, script, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                          os.path.join(HERE, script), url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"RESULT rps=([\d.]+) p50_ms=([\d.]+) p99_ms=([\d.]+) errors=(\d+) non2xx=(\d+)", out)
    return {"rps": float(m[1]), "p50": float(m[2]), "p99": float(m[3]), "errors": int(m[4]), "non2xx": int(m[5])}


def seed_export_rows(serve):
    items = [{"agent_id": "export", "prompt": f"prompt {i} " + "x" * 100, "response_chosen": "good " * 20,
              "response_rejected": "bad " * 20} for i in range(1000)]
    status, _ = serve.request("POST", "/api/rlhf/feedback/batch", {"items": items}, token="annotator")
    assert status == 201


PEER_WORKERS = [int(w) for w in os.environ.get("PEER_WORKERS", "1,2,4").split(",")]
PEER_POOL = int(os.environ.get("N3RLHF_PEER_POOL", "16"))


def peer_fast_stack():
    """uvicorn's fastest loop and HTTP parser (requirements.txt installs them; a venv without them
    runs the peer on its defaults, said on stderr)."""
    ok = subprocess.run([sys.executable, "-c", "import uvloop, httptools"], capture_output=True).returncode == 0
    if not ok:
        print("peer: uvloop/httptools missing, uvicorn on its defaults (run scripts/setup.sh)", file=sys.stderr)
    return ["--loop", "uvloop", "--http", "httptools"] if ok else []


def peer(store_url, work, workers):
    port = harness.free_port()
    env = dict(os.environ, N3RLHF_PEER_DB=store_url.replace("sqlite:", "sqlite:///", 1)
               if store_url.startswith("sqlite:") else store_url.replace("postgresql://", "postgresql+psycopg2://", 1),
               N3RLHF_PEER_POOL=str(PEER_POOL))
    log = open(os.path.join(work, "peer.log"), "w")
    process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "uvicorn"), "peer_app:app", "--port",
                                str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log",
                                *peer_fast_stack()],
                               cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            import http.client
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/docs")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}"


def bench(binary, store_url, work, seconds, connections):
    results = {}
    serve = harness.Serve(binary, store_url, work)
    try:
        results["n3rlhf post"] = wrk(serve.url + "/api/rlhf/feedback", "post_feedback.lua", seconds, connections)
        print(f"  n3rlhf {store_url.split(':')[0]} post: {results['n3rlhf post']}", flush=True)
        seed_export_rows(serve)
        results["n3rlhf export"] = wrk(serve.url + "/api/rlhf/feedback/export?agent_id=export", "export.lua",
                                       seconds, connections)
        print(f"  n3rlhf {store_url.split(':')[0]} export: {results['n3rlhf export']}", flush=True)
    finally:
        serve.stop()
    for workers in PEER_WORKERS:
        process, url = peer(store_url, work, workers)
        try:
            for route, path, script in (("post", "/api/rlhf/feedback", "post_feedback.lua"),
                                        ("export", "/api/rlhf/feedback/export?agent_id=export", "export.lua")):
                r = wrk(url + path, script, seconds, connections)
                r["workers"] = workers
                print(f"  peer {store_url.split(':')[0]} {route} workers={workers}: {r}", flush=True)
                if f"peer {route}" not in results or r["rps"] > results[f"peer {route}"]["rps"]:
                    results[f"peer {route}"] = r
        finally:
            process.terminate()
            process.wait()
    return results


def main(binary, seconds, connections):
    rows = []
    with tempfile.TemporaryDirectory() as work:
        rows.append(("sqlite", bench(binary, f"sqlite:{work}/bench.db", work, seconds, connections)))
    with tempfile.TemporaryDirectory() as work, harness.postgres() as url:
        rows.append(("postgresql", bench(binary, url, work, seconds, connections)))
    print(f"\nwrk -t2 -c{connections} -d{seconds}s; peer = FastAPI + SQLAlchemy + uvicorn {' '.join(peer_fast_stack())}"
          f" (pool {PEER_POOL}+{PEER_POOL}), best of workers {PEER_WORKERS}")
    print(f"{'store':<11} {'route':<7} {'n3rlhf req/s':>13} {'peer req/s':>11} {'workers':>7} {'ratio':>6} "
          f"{'n3 p50 ms':>9} {'peer p50':>9} {'n3 p99 ms':>9} {'peer p99':>9} {'non2xx n3/peer':>15}")
    for store, r in rows:
        for route in ("post", "export"):
            a, b = r[f"n3rlhf {route}"], r[f"peer {route}"]
            print(f"{store:<11} {route:<7} {a['rps']:>13.0f} {b['rps']:>11.0f} {b['workers']:>7} "
                  f"{a['rps'] / max(b['rps'], 1e-9):>6.2f} "
                  f"{a['p50']:>9.2f} {b['p50']:>9.2f} {a['p99']:>9.2f} {b['p99']:>9.2f} "
                  f"{a['non2xx'] + a['errors']:>7}/{b['non2xx'] + b['errors']:<7}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10, int(sys.argv[3]) if len(sys.argv) > 3 else 32)
