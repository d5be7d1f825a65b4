# durability_check.py: SIGKILL `n3rlhf serve` while clients post feedback, on SQLite and on
# PostgreSQL; every row that got a 2xx (its id and its text) must be in the database afterwards,
# read directly with Python's sqlite3 / psycopg2. Usage: durability_check.py N3RLHF_BINARY [SECONDS]
import http.client
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time

import psycopg2

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def load(serve, acknowledged, stop, worker):
    """One keep-alive client posting until the connection dies; records (id, prompt) of each 201."""
    i = 0
    while not stop.is_set():
        try:
            connection = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
            while not stop.is_set():
                prompt = f"w{worker}-{i}"
                body = json.dumps({"agent_id": "durable", "prompt": prompt, "response_chosen": "c",
                                   "response_rejected": "r"})
                connection.request("POST", "/api/rlhf/feedback", body=body, headers={
                    "Authorization": "Bearer " + harness.TOKENS["annotator"], "Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                if 200 <= response.status < 300:
                    acknowledged.append((json.loads(payload)["id"], prompt))
                i += 1
        except (OSError, http.client.HTTPException):
            time.sleep(0.01)  # the server is gone (killed): keep trying until told to stop


def run(binary, store, work, seconds, read_rows):
    serve = harness.Serve(binary, store, work)
    acknowledged, stop = [], threading.Event()
    threads = [threading.Thread(target=load, args=(serve, acknowledged, stop, w)) for w in range(16)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    serve.kill()  # SIGKILL in the middle of the load
    stop.set()
    for t in threads:
        t.join()
    stored = read_rows()
    missing = [(i, p) for i, p in acknowledged if stored.get(i) != p]
    print(f"{store.split(':')[0]}: {len(acknowledged)} rows acknowledged before SIGKILL, {len(stored)} in the "
          f"database, {len(missing)} acknowledged rows missing")
    assert acknowledged, "no request succeeded"
    assert not missing, missing[:10]


def main(binary, seconds):
    with tempfile.TemporaryDirectory() as work:
        path = f"{work}/durable.db"

        def read_sqlite():
            with sqlite3.connect(path) as db:
                return dict(db.execute("SELECT id, prompt FROM rlhf_feedback").fetchall())
        run(binary, f"sqlite:{path}", work, seconds, read_sqlite)
    with tempfile.TemporaryDirectory() as work, harness.postgres() as url:
        def read_postgres():
            with psycopg2.connect(url) as db, db.cursor() as cursor:
                cursor.execute("SELECT id, prompt FROM rlhf_feedback")
                return dict(cursor.fetchall())
        run(binary, url, work, seconds, read_postgres)
    print("durability_check: ok")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 3.0)
