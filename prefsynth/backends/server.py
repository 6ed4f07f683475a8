"""A small OpenAI-compatible completions server over the transformers backend.

`prefsynth serve --model models/policy-0 --port 8000` serves `/v1/models` and
`/v1/completions` (prompt as string or list, n, temperature, top_p, max_tokens, stop, seed,
logprobs, echo). It exists so the HTTP path can be exercised for real on any machine — the
tests run the generate stage against it — and to serve a policy the way `vllm serve` does on a
GPU machine. For production throughput use vLLM, SGLang or TGI: this server runs one request
at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prefsynth.backends.base import SamplingParams
from prefsynth.backends.transformers_backend import TransformersBackend

log = logging.getLogger("prefsynth.serve")


class CompletionsApp:
    def __init__(self, backend: TransformersBackend, model_name: str):
        self.backend, self.model_name = backend, model_name
        self.lock = threading.Lock()  # one model, one request at a time

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "prefsynth"}]}

    def completions(self, body: dict) -> dict:
        prompts = body.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("'prompt' must be a string or a list of strings")
        stop = body.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        n = int(body.get("n", 1))
        max_tokens = int(body.get("max_tokens", 16))
        top_k = int(body.get("logprobs") or 0)
        echo = bool(body.get("echo", False))
        sp = SamplingParams(n=n, temperature=float(body.get("temperature", 1.0)),
                            top_p=float(body.get("top_p", 1.0)), max_new_tokens=max(max_tokens, 1), stop=stop)
        seed = int(body.get("seed") or 0)
        context = getattr(self.backend.model.config, "n_positions", None) or \
            getattr(self.backend.model.config, "max_position_embeddings", None)
        if context:  # as vLLM does: a request that cannot fit is a 400, not a crash mid-generation
            for i, p in enumerate(prompts):
                n_prompt = len(self.backend.tokenizer(p, add_special_tokens=False)["input_ids"])
                if n_prompt >= context:
                    raise ValueError(f"This model's maximum context length is {context} tokens; prompt {i} has "
                                     f"{n_prompt} tokens")
        choices = []
        with self.lock:
            groups = self.backend.generate(prompts, sp, [seed] * len(prompts), top_logprobs=max(top_k, 1))
            for i, (prompt, group) in enumerate(zip(prompts, groups)):
                for j, c in enumerate(group):
                    choice = {"index": i * n + j, "text": (prompt if echo else "") + c.text,
                              "finish_reason": c.finish_reason}
                    if body.get("logprobs") is not None:
                        choice["logprobs"] = self._logprobs(prompt, c, echo)
                    choices.append(choice)
        n_completion = sum(len(c.get("logprobs", {}).get("tokens", [])) for c in choices)
        return {"id": f"cmpl-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_name, "choices": choices,
                "usage": {"prompt_tokens": 0, "completion_tokens": n_completion, "total_tokens": n_completion}}

    def _logprobs(self, prompt: str, c, echo: bool) -> dict:
        tok = self.backend.tokenizer
        tokens = tok.convert_ids_to_tokens(c.token_ids)
        token_lps, tops = list(c.logprobs), list(c.extra.get("top_logprobs", []))
        offsets, pos = [], len(prompt) if echo else 0
        if echo:
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            p_tokens = tok.convert_ids_to_tokens(p_ids)
            p_lps = self._prompt_logprobs(p_ids)
            offsets, pos = [], 0
            for t in p_tokens:
                offsets.append(pos)
                pos += len(tok.convert_tokens_to_string([t]))
            tokens, token_lps, tops = p_tokens + tokens, p_lps + token_lps, [None] * len(p_tokens) + tops
        for t in tokens[len(offsets):]:
            offsets.append(pos)
            pos += len(tok.convert_tokens_to_string([t]))
        return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}

    def _prompt_logprobs(self, ids: list[int]) -> list[float | None]:
        import torch

        with torch.no_grad():
            logits = self.backend.model(input_ids=torch.tensor([ids], device=self.backend.device)).logits[0]
            logp = torch.log_softmax(logits.float(), -1)
        return [None] + [float(logp[k - 1, ids[k]]) for k in range(1, len(ids))]


def make_handler(app: CompletionsApp):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # request lines at debug level only; never headers (API keys)
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, payload: dict):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, app.models())
            elif self.path.rstrip("/") in ("/health", "/v1/health"):
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as err:
                self._send(400, {"error": {"message": f"invalid JSON: {err}", "type": "invalid_request_error"}})
                return
            if self.path.rstrip("/") not in ("/v1/completions", "/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            try:
                self._send(200, app.completions(body))
            except (ValueError, TypeError) as err:
                self._send(400, {"error": {"message": str(err), "type": "invalid_request_error"}})
            except Exception as err:  # noqa: BLE001 - answer every request; a client must never wait out a timeout
                log.exception("request failed")
                self._send(500, {"error": {"message": f"{type(err).__name__}: {err}", "type": "server_error"}})

    return Handler


def serve(model_path: str, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
) -> ThreadingHTTPServer:
    backend = TransformersBackend(model_path)
    app = CompletionsApp(backend, model_name or model_path)
    server = ThreadingHTTPServer((host, port), make_handler(app))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="prefsynth serve", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="local model directory")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--served-model-name", default=None)
    args = ap.parse_args(argv)
    server = serve(args.model, args.host, args.port, args.served_model_name)
    print(f"serving {args.model} on http://{args.host}:{server.server_address[1]}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
