"""The OpenAI-compatible backend against servers that misbehave in every way seen in the field:
200 replies that are cut off or not JSON (retried), replies of the wrong shape (one clear failure,
not retried), servers that return no log-probs, stream only, refuse connections or go away.
Every failure is per prompt, carries the raw body as plain text and names the server."""

import json
import logging

import pytest

from prefsynth.backends.base import SamplingParams
from prefsynth.backends.openai_backend import GenerationFailure, OpenAIBackend, ScoreError, ServerUnreachable

from fault_server import CUT_JSON, HTML_PAGE, ScriptedServer, completion_json
from helpers import free_port

SP = SamplingParams(n=1, max_new_tokens=8)
OK = (200, "application/json", json.dumps(completion_json()).encode())


def backend(url: str, max_retries: int = 2) -> OpenAIBackend:
    http = OpenAIBackend(url, "m", max_retries=max_retries, timeout_s=5, max_concurrency=4, vocab_size=34)
    http.retry_initial_s = 0.01  # keep the back-off short in tests
    return http


def by_prompt(plan: dict):
    """reply(attempt, body) from {prompt: [reply of attempt 1, reply of attempt 2, ...]} (last one repeats)."""
    def reply(attempt, body):
        seq = plan[body["prompt"]]
        return seq[min(attempt, len(seq)) - 1]
    return reply


def test_cut_off_and_html_200_bodies_are_retried_then_answered():
    plan = {"cut": [(200, "application/json", CUT_JSON), OK],
            "cut2": [(200, "application/json", CUT_JSON)] * 2 + [OK],
            "html": [(200, "text/html", HTML_PAGE), OK],
            "ok": [OK]}
    with ScriptedServer(by_prompt(plan)) as server:
        http = backend(server.base_url)
        out = http.generate(list(plan), SP, seeds=[1, 2, 3, 4])
    assert all(isinstance(g, list) and g[0].text == "1+1=2\nA: 2\n" and g[0].logprobs for g in out), out
    assert server.attempts == {"cut": 2, "cut2": 3, "html": 2, "ok": 1}
    assert http.retries == 4 and http.stats["bad_bodies"] == 4


def test_bodies_that_stay_bad_are_one_failure_each_with_the_raw_body_as_text():
    plan = {"cut": [(200, "application/json", CUT_JSON)], "html": [(200, "text/html", HTML_PAGE)], "ok": [OK]}
    with ScriptedServer(by_prompt(plan)) as server:
        http = backend(server.base_url, max_retries=2)
        cut, html, ok = http.generate(list(plan), SP, seeds=[1, 2, 3])
    assert isinstance(ok, list) and ok[0].text  # one prompt's failure costs no other prompt
    for f, body in ((cut, CUT_JSON), (html, HTML_PAGE)):
        assert isinstance(f, GenerationFailure) and f.error_type == "bad_response"
        assert f.raw_output == body.decode()  # the body itself, not a Python repr
        assert server.base_url in f.message and "after 2 retries" in f.message
    assert "cut off" in cut.message and "not JSON" in html.message
    assert server.attempts == {"cut": 3, "html": 3, "ok": 1}


def test_wrong_shapes_fail_at_once_with_a_clear_message():
    sse = b'data: {"choices": [{"text": "1"}]}\n\ndata: [DONE]\n\n'
    plan = {"empty": [(200, "application/json", b'{"id": "x", "choices": []}')],
            "stream": [(200, "text/event-stream", sse)],
            "notext": [(200, "application/json", b'{"choices": [{"index": 0}]}')]}
    with ScriptedServer(by_prompt(plan)) as server:
        out = dict(zip(plan, backend(server.base_url).generate(list(plan), SP, seeds=[1, 2, 3])))
    assert all(isinstance(f, GenerationFailure) and f.error_type == "bad_response" for f in out.values())
    assert "no choices" in out["empty"].message and out["empty"].raw_output == '{"id": "x", "choices": []}'
    assert "event stream" in out["stream"].message and "streaming-only" in out["stream"].message
    assert out["stream"].raw_output == sse.decode()
    assert "no text" in out["notext"].message
    assert server.attempts == {"empty": 1, "stream": 1, "notext": 1}  # asking again gets the same answer


def test_a_server_without_logprobs_keeps_the_text_with_null_statistics(caplog):
    reply = (200, "application/json", json.dumps(completion_json("2+2=4\nA: 4\n", logprobs=False)).encode())
    with ScriptedServer(lambda attempt, body: reply) as server, caplog.at_level(logging.WARNING, "prefsynth"):
        (g,) = backend(server.base_url).generate(["p"], SP, seeds=[1])
    (c,) = g
    assert c.text == "2+2=4\nA: 4\n" and c.logprobs == [] and c.mean_logprob is None and c.self_certainty is None
    assert c.n_tokens == len("2+2=4\nA: 4\n")  # from usage.completion_tokens
    assert "returned no logprobs" in caplog.text and server.base_url in caplog.text


def test_connection_refused_names_the_server_after_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    http = backend(url, max_retries=1)
    with pytest.raises(ServerUnreachable, match=rf"cannot reach {url} after 1 retries"):
        http.generate(["a", "b"], SP, seeds=[1, 2])
    assert http.stats["attempts"] == 4  # 2 prompts x (1 try + 1 retry)
    with pytest.raises(ScoreError, match=rf"score request to {url} failed \(APIConnectionError\)"):
        http.score(["a"], ["b"])


def test_server_gone_mid_run():
    gone = {"now": False}

    def reply(attempt, body):
        return None if gone["now"] or body["prompt"] == "dies" else OK

    with ScriptedServer(reply) as server:
        http = backend(server.base_url, max_retries=1)
        ok, died = http.generate(["fine", "dies"], SP, seeds=[1, 2])
        # some prompts answered, one connection dropped: a per-prompt failure naming the server
        assert isinstance(ok, list)
        assert isinstance(died, GenerationFailure) and died.error_type == "APIConnectionError"
        assert server.base_url in died.message
        gone["now"] = True
        with pytest.raises(ServerUnreachable, match=server.base_url):
            http.generate(["x", "y"], SP, seeds=[1, 2])


def test_score_retries_bad_bodies_then_raises_a_clear_error():
    def echo(prompt):
        return (200, "application/json", json.dumps(completion_json("z", prompt=prompt, echo=True)).encode())

    def reply(attempt, body):
        prompt = body["prompt"]
        if prompt.startswith("cut") and attempt == 1:
            return 200, "application/json", CUT_JSON
        if prompt.startswith("html"):
            return 200, "text/html", HTML_PAGE
        if prompt.startswith("nolp"):
            return 200, "application/json", json.dumps(completion_json("z", logprobs=False)).encode()
        return echo(prompt)

    with ScriptedServer(reply) as server:
        http = backend(server.base_url, max_retries=2)
        assert http.score(["cut:", "ok:"], ["abc", "de"]) == [-1.5, -1.0]
        assert server.attempts["cut:abc"] == 2
        with pytest.raises(ScoreError, match=rf"score request to {server.base_url} failed \(bad_response\).*"
                                             r"not JSON.*after 2 retries.*502 Bad Gateway"):
            http.score(["ok:", "html:"], ["de", "x"])
        assert server.attempts["html:x"] == 3
        with pytest.raises(ScoreError, match="cannot score"):
            http.score(["nolp:"], ["x"])
        assert server.attempts["nolp:x"] == 1
