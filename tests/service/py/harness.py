# harness.py: what the Python-driven service checks share: a real PostgreSQL server in a temp dir
# (initdb + pg_ctl on a free loopback port, as user nobody when root), `n3rlhf serve` started as a
# child on a free port with a token file, and small HTTP helpers (standard library only).
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

TOKENS = {
    "annotator": "annotator-token-0123456789",
    "operator": "operator-token-0123456789",
    "reader": "reader-token-0123456789",
    "all": "all-roles-token-0123456789",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin():
    for version in ("17", "16", "15", "14", "13"):
        path = f"/usr/lib/postgresql/{version}/bin"
        if os.path.exists(f"{path}/pg_ctl"):
            return path
    raise RuntimeError("no /usr/lib/postgresql/*/bin/pg_ctl (Debian package postgresql)")


@contextlib.contextmanager
def postgres():
    """Yields a connection URL of a fresh database on a server that lives for the block."""
    directory = tempfile.mkdtemp(prefix="n3rlhf-pg-")
    as_owner = []
    if os.geteuid() == 0:
        shutil.chown(directory, "nobody", "nogroup")
        as_owner = ["runuser", "-u", "nobody", "--"]
    pg = _pg_bin()
    port = free_port()
    subprocess.run(as_owner + [f"{pg}/initdb", "-D", f"{directory}/data", "-U", "postgres", "-A", "trust",
                               "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
    subprocess.run(as_owner + [f"{pg}/pg_ctl", "-D", f"{directory}/data", "-l", f"{directory}/server.log", "-w",
                               "-t", "60", "start", "-o",
                               f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=300"],
                   check=True, capture_output=True)
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run(as_owner + [f"{pg}/pg_ctl", "-D", f"{directory}/data", "-w", "-m", "fast", "stop"],
                       capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


class Serve:
    """`n3rlhf serve` as a child process; stop() with SIGTERM, kill() with SIGKILL."""

    def __init__(self, binary, store, workdir, extra=(), env=None):
        self.port = free_port()
        self.workdir = workdir
        token_file = os.path.join(workdir, "tokens.json")
        roles = {"annotator": ["annotator"], "operator": ["operator"], "reader": ["reader"],
                 "all": ["annotator", "operator", "reader"]}
        with open(token_file, "w") as f:
            json.dump({"tokens": [{"name": k, "token": v, "roles": roles[k]} for k, v in TOKENS.items()]}, f)
        self.log = open(os.path.join(workdir, f"serve-{self.port}.log"), "w")
        args = [binary, "serve", "--port", str(self.port), "--store", store, "--tokens", token_file,
                "--jobs-dir", os.path.join(workdir, "jobs"), "--allow-root", workdir, *extra]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("n3rlhf serve exited: " + open(self.log.name).read())
            try:
                status, _ = self.request("GET", "/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("n3rlhf serve did not answer /health")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, token=None, content_type="application/json"):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {}
        if token:
            headers["Authorization"] = "Bearer " + TOKENS.get(token, token)
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers["Content-Type"] = content_type
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        if response.getheader("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(payload)
        return response.status, payload

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()
