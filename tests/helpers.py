"""Shared test helpers: tiny random policies and real HTTP servers on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from prefsynth.tiny_policy import build_model, build_tokenizer


def tiny_random_policy(path: Path, n_positions: int = 96, seed: int = 0, n_embd: int = 32) -> str:
    """An untrained tiny policy saved like a real one (enough to test plumbing, fast)."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    model = build_model(tok, n_layer=1, n_embd=n_embd, n_head=2, n_positions=n_positions)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll `url` until it answers 200; fail early if `proc` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} in {timeout:.0f} s")


class ServeProcess:
    """`prefsynth serve` in its own process: a real OpenAI-compatible server on loopback."""

    def __init__(self, model: str, name: str = "policy"):
        self.port = free_port()
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefsynth", "serve", "--model", model, "--port", str(self.port),
             "--served-model-name", name],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for_http(f"{self.base_url}/models", self.proc, 120, "prefsynth serve")
        except RuntimeError:
            self.close()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FailingServer:
    """A real HTTP server that answers every completion with `status` and `body`, counting hits."""

    def __init__(self, status: int = 500, body: str = '{"error": {"message": "boom"}}', headers=None):
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = body.encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def write_params(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def arith_prefix(prompt: str):
    """(problem, steps already written, the value they reached) of an arith prompt + prefix, as the
    rule-based test policies read what they are asked to continue."""
    from prefsynth.tasks import arith

    head, _, body = prompt.partition("\n")
    problem = arith.parse_expression(head)
    done = [s for s in body.split("\n") if s.strip()]
    return problem, done, problem.first if not done else int(done[-1].split("=")[-1])


class ExactArithPolicy:
    """A rule-based arith 'policy' for the backend protocol: it continues any prefix correctly
    from the value the prefix reached (so a wrong step stays wrong, as in real solutions).
    Exact and deterministic, which makes MC-label search logic checkable by hand."""

    name = "exact-arith"

    def generate(self, prompts, sampling, seeds=None):
        from prefsynth.backends.base import Completion
        from prefsynth.tasks import arith

        out = []
        for p in prompts:
            problem, done, cur = arith_prefix(p)
            lines = []
            for op, b in list(zip(problem.ops, problem.operands))[len(done):]:
                nxt = arith.apply_op(cur, op, b)
                lines.append(f"{cur}{op}{b}={nxt}")
                cur = nxt
            text = "".join(s + "\n" for s in lines) + f"A: {cur}\n"
            out.append([Completion(text, [0] * len(text), [-0.1] * len(text), "stop") for _ in range(sampling.n)])
        return out

    def score(self, prompts, continuations):
        return [0.0 for _ in prompts]
