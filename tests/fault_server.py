"""A fault-injecting OpenAI-compatible server: the real completions app behind it, and a fault
plan keyed by the prompt, so every fault kind is hit by known records on every run.

Fault kinds (per prompt, by the first character class of a fixed hash):
  ok            answers normally
  flaky_5xx     503 on the first try, then answers
  rate_limited  429 with Retry-After: 1 on the first try, then answers
  timeout       sleeps past the client's timeout on the first try, then answers
  truncated     a body shorter than its Content-Length on the first try, then answers
  cut_json      200, complete by its Content-Length, but the JSON cut off mid-string, on the first try
  html_200      200 with a proxy's HTML error page on the first try, then answers
  slow          answers after a delay shorter than the timeout
  always_500    500 with a JSON error body, every time
  not_json      200 with an HTML body, every time
  always_cut    200 with JSON cut off mid-string, every time

`ScriptedServer` is the same kind of loopback server for backend tests: every reply comes from a
function of (attempt number, request body).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefsynth.backends.server import CompletionsApp
from prefsynth.backends.transformers_backend import TransformersBackend

KINDS = ["ok", "flaky_5xx", "rate_limited", "timeout", "truncated", "cut_json", "html_200", "slow", "always_500",
         "not_json", "always_cut"]
ALWAYS_FAILING = ("always_500", "not_json", "always_cut")
HTML_PAGE = b"<html><body><h1>502 Bad Gateway</h1>nginx (injected)</body></html>"
CUT_JSON = b'{"id": "cmpl-cut", "object": "text_completion", "choices": [{"index": 0, "text": "1+2=3\\nA: '



def fault_of(prompt: str) -> str:
    return KINDS[hashlib.sha256(prompt.encode()).digest()[0] % len(KINDS)]


class FaultServer:
    def __init__(self, model_path: str, timeout_s: float):
        self.app = CompletionsApp(TransformersBackend(model_path), "policy")
        self.timeout_s = timeout_s
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body: bytes, headers=None, length=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
                kind = fault_of(prompt)
                with outer.lock:
                    outer.attempts[prompt] = outer.attempts.get(prompt, 0) + 1
                    first = outer.attempts[prompt] == 1
                if kind == "always_500":
                    return self._send(500, b'{"error": {"message": "injected: worker crashed", "type": "server_error"}}',
                                      {"Content-Type": "application/json"})
                if kind == "not_json":
                    return self._send(200, b"<html>502 Bad Gateway (injected)</html>", {"Content-Type": "text/html"})
                if kind == "always_cut" or (first and kind == "cut_json"):
                    return self._send(200, CUT_JSON, {"Content-Type": "application/json"})
                if first and kind == "html_200":
                    return self._send(200, HTML_PAGE, {"Content-Type": "text/html"})
                if first and kind == "flaky_5xx":
                    return self._send(503, b'{"error": {"message": "injected: overloaded"}}',
                                      {"Content-Type": "application/json"})
                if first and kind == "rate_limited":
                    return self._send(429, b'{"error": {"message": "injected: slow down"}}',
                                      {"Content-Type": "application/json", "Retry-After": "1"})
                if first and kind == "timeout":
                    time.sleep(outer.timeout_s + 1.0)
                    return self._send(200, b"{}", {"Content-Type": "application/json"})
                if first and kind == "truncated":
                    self._send(200, b'{"id": "cmpl-x", "choi', {"Content-Type": "application/json"}, length=4096)
                    self.close_connection = True
                    return
                if kind == "slow":
                    time.sleep(outer.timeout_s / 4)
                payload = json.dumps(outer.app.completions(body)).encode()
                self._send(200, payload, {"Content-Type": "application/json"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def completion_json(text: str = "1+1=2\nA: 2\n", logprobs: bool = True, prompt: str = "", echo: bool = False) -> dict:
    """A well-formed completions reply (one choice; with echo, the prompt's tokens first)."""
    chars = list((prompt if echo else "") + text)
    lp = {"tokens": chars, "token_logprobs": [None if echo and i == 0 else -0.5 for i in range(len(chars))],
          "top_logprobs": [{c: -0.5} for c in chars], "text_offset": list(range(len(chars)))}
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": lp if logprobs else None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(text), "total_tokens": 3 + len(text)}}


class ScriptedServer:
    """Loopback HTTP server; `reply(attempt, body) -> (status, content_type, bytes)` per POST, or
    None to drop the connection unanswered; `attempt` counts from 1 per prompt."""

    def __init__(self, reply):
        self.hits = 0
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else ""
                with outer.lock:
                    outer.hits += 1
                    n = outer.attempts[prompt] = outer.attempts.get(prompt, 0) + 1
                answer = reply(n, body)
                if answer is None:  # the server goes away: the connection closes with no reply
                    self.close_connection = True
                    return
                status, ctype, data = answer
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
