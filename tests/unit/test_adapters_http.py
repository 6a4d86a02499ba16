"""`openai:<model>` against scripted chat-completions servers on the loopback interface: request
contents (prompts, images, key, decoding), retries on 5xx, 429 with Retry-After, dropped
connections and malformed status lines, 4xx without retry, a deadline per attempt that a
trickling server cannot stretch, a cap on the response size, the concurrency bound, K sampled
answers and a full run. Deadlines and waits are fractions of a second."""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from qbench import ModelConfig, ModelError, Sample, create_model
from qbench.backends.http import retry_after_s
from qbench.core.protocol import COMPARISON_LEAD, SCORE_QUESTION, SYSTEM_PROMPT
from qbench.run.runner import RunConfig, run


@dataclass
class Reply:
    """What the server does with one request. `kind`: "normal"; "drop" (close without a
    word); "malformed" (a broken status line); "trickle" (headers, then one body byte every
    `delay` seconds); "no_length" (the body without Content-Length, ended by closing)."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    kind: str = "normal"


def answer(*texts: str, **extra) -> Reply:
    choices = [{"index": i, "message": {"role": "assistant", "content": t}}
               for i, t in enumerate(texts)]
    return Reply(body=json.dumps({"choices": choices}).encode(), **extra)


class Endpoint:
    """A chat-completions server on 127.0.0.1 whose replies come from `script(n, request)`,
    n counting requests from 0. It records requests, their arrival times and the most
    requests in flight."""

    def __init__(self, script: Callable[[int, dict], Reply]):
        self.script, self.requests, self.headers, self.times = script, [], [], []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint.lock:
                    n = len(endpoint.requests)
                    endpoint.requests.append(body)
                    endpoint.headers.append(dict(self.headers))
                    endpoint.times.append(time.monotonic())
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                reply = endpoint.script(n, body)
                try:
                    self.respond(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up and left
                finally:
                    with endpoint.lock:
                        endpoint.in_flight -= 1

            def respond(self, reply: Reply) -> None:
                self.close_connection = reply.kind != "normal"
                if reply.kind == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.kind == "malformed":
                    self.wfile.write(b"HTTP/1.1 2xx Fine-ish\r\nno colon here\r\n\r\n")
                    return
                if reply.kind != "trickle":
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                if reply.kind != "no_length":
                    self.send_header("Content-Length", str(len(reply.body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if reply.kind == "trickle":
                    for byte in reply.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.delay)
                else:
                    self.wfile.write(reply.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    endpoints = []

    def start(script: Callable[[int, dict], Reply]) -> Endpoint:
        endpoints.append(Endpoint(script))
        return endpoints[-1]

    yield start
    for endpoint in endpoints:
        endpoint.close()


def model_for(endpoint: Endpoint, **options):
    options = {"base_url": endpoint.url, "backoff_s": 0.01, "timeout_s": 5.0} | options
    return create_model("openai:served-qinsight", ModelConfig(seed=5, options=options))


def pictures(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)) for _ in range(n)]


def score_sample(i: int = 0) -> Sample:
    return Sample(id=f"s{i}", task="t", kind="score", images=("x.png",))


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_requests_carry_protocol_prompts_images_key_and_greedy_decoding(serve, monkeypatch):
    monkeypatch.setenv("QBENCH_TEST_KEY", "sk-local-test")
    endpoint = serve(lambda n, body: answer('<think>fine</think><answer>{"rating": 3.4}</answer>'))
    model = model_for(endpoint, api_key_env="QBENCH_TEST_KEY", decoding="greedy")
    score_images, comparison_images = pictures(1), pictures(3, seed=1)
    comparison = Sample(id="c", task="t", kind="comparison", images=("r", "a", "b"))
    score, _ = model.predict([score_sample(), comparison], [score_images, comparison_images])
    assert score.ok and score.score == 3.4

    # requests go out concurrently: tell them apart by the number of images
    by_images = {sum(p["type"] == "image_url" for p in r["messages"][1]["content"]): r
                 for r in endpoint.requests}
    request = by_images[1]
    assert all(h["Authorization"] == "Bearer sk-local-test" for h in endpoint.headers)
    assert (request["model"], request["temperature"], request["n"], request["seed"],
            request["top_k"], request["repetition_penalty"]) == \
        ("served-qinsight", 0.0, 1, 5, -1, 1.0)  # every value explicit: no server default
    system, user = request["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert [p["type"] for p in user["content"]] == ["image_url", "text"]  # image first
    assert user["content"][1]["text"] == SCORE_QUESTION
    assert np.array_equal(decode_data_url(user["content"][0]["image_url"]["url"]),
                          np.asarray(score_images[0]))
    parts = by_images[3]["messages"][1]["content"]
    assert parts[0]["text"] == COMPARISON_LEAD
    sent = [decode_data_url(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(sent, comparison_images))
    assert len(sent) == 3


OK = '<answer>{"rating": 4.0}</answer>'


@pytest.mark.parametrize("failure", [
    Reply(status=503, body=b'{"error": "busy"}'),
    Reply(kind="drop"),
    Reply(kind="malformed"),
], ids=["503", "dropped connection", "malformed status line"])
def test_transient_failures_are_retried_until_an_answer(serve, failure):
    endpoint = serve(lambda n, body: failure if n < 2 else answer(OK))
    (prediction,) = model_for(endpoint, retries=3).predict([score_sample()], [pictures(1)])
    assert prediction.ok and prediction.score == 4.0
    assert len(endpoint.requests) == 3


def test_retries_run_out_and_client_errors_are_not_retried(serve):
    failing = serve(lambda n, body: Reply(status=500, body=b"internal"))
    (prediction,) = model_for(failing, retries=2).predict([score_sample()], [pictures(1)])
    assert prediction.status == "model_error"
    assert "HTTP 500" in prediction.error and "gave up after 3 attempts" in prediction.error
    assert len(failing.requests) == 3

    dropping = serve(lambda n, body: Reply(kind="drop"))
    (prediction,) = model_for(dropping, retries=1).predict([score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and "lost the answer" in prediction.error
    assert len(dropping.requests) == 2

    rejecting = serve(lambda n, body: Reply(status=400, body=b'{"error": "bad image"}'))
    (prediction,) = model_for(rejecting, retries=2).predict([score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and "HTTP 400" in prediction.error
    assert "bad image" in prediction.error and len(rejecting.requests) == 1


def test_429_waits_as_long_as_retry_after_says(serve):
    endpoint = serve(lambda n, body: Reply(status=429, headers={"Retry-After": "0.4"})
                     if n == 0 else answer(OK))
    (prediction,) = model_for(endpoint, backoff_s=0.0).predict([score_sample()], [pictures(1)])
    assert prediction.ok and len(endpoint.requests) == 2
    assert endpoint.times[1] - endpoint.times[0] >= 0.4

    impatient = serve(lambda n, body: Reply(status=429, headers={"Retry-After": "120"}))
    (prediction,) = model_for(impatient, max_wait_s=1.0).predict(
        [score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and "retry after 120 s" in prediction.error
    assert len(impatient.requests) == 1


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_s({"retry-after": "3"}) == 3.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"},
                         now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None


def test_a_deadline_holds_against_slow_and_trickling_servers(serve):
    slow = serve(lambda n, body: answer(OK, delay=1.0))
    (prediction,) = model_for(slow, timeout_s=0.2, retries=1).predict(
        [score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and "0.2 s deadline" in prediction.error
    assert len(slow.requests) == 2

    # one byte every 0.1 s: no read ever waits long, the whole answer would take ~10 s
    trickling = serve(lambda n, body: answer(OK, kind="trickle", delay=0.1))
    start = time.monotonic()
    (prediction,) = model_for(trickling, timeout_s=0.5, retries=0).predict(
        [score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and "0.5 s deadline" in prediction.error
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("kind", ["normal", "no_length"])
def test_oversize_answers_are_refused_not_stored(serve, kind):
    huge = answer("x" * 300_000, kind=kind)
    endpoint = serve(lambda n, body: huge)
    (prediction,) = model_for(endpoint, max_response_bytes=100_000).predict(
        [score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and prediction.text is None
    assert "larger than max_response_bytes=100000" in prediction.error
    assert len(endpoint.requests) == 1  # the same answer would come back: no retry


@pytest.mark.parametrize("body, status, message", [
    (b"<html>gateway</html>", "model_error", "malformed response"),
    (b'{"choices": []}', "model_error", "no text content"),
    (b'{"choices": [{"message": {"content": null}}]}', "model_error", "no text content"),
    (b'{"result": "4.1"}', "model_error", "malformed response"),
    (json.dumps({"choices": [{"message": {"content": "It looks nice."}}]}).encode(),
     "unparsed", "no rating found"),
    (answer('{"rating": 1}', '{"rating": 5}').body, "model_error",   # never averaged
     "the response has 2 choices, 1 asked for"),
])
def test_malformed_responses_fail_the_sample_with_a_reason(serve, body, status, message):
    endpoint = serve(lambda n, _: Reply(body=body))
    (prediction,) = model_for(endpoint, retries=0).predict([score_sample()], [pictures(1)])
    assert prediction.status == status and message in prediction.error


def test_requests_in_flight_stay_within_the_concurrency_bound(serve):
    endpoint = serve(lambda n, body: answer('{"rating": 3}', delay=0.15))
    predictions = model_for(endpoint, concurrency=2).predict(
        [score_sample(i) for i in range(6)], [pictures(1)] * 6)
    assert all(p.ok for p in predictions)
    assert endpoint.max_in_flight == 2


def test_k_sampled_answers_use_the_demo_sampling_and_are_averaged(serve):
    endpoint = serve(lambda n, body: answer('{"rating": 2}', '{"rating": 3}', "garbled"))
    model = model_for(endpoint, decoding="demo", samples=3)
    (prediction,) = model.predict([score_sample()], [pictures(1)])
    request = endpoint.requests[0]
    assert (request["n"], request["temperature"], request["top_p"], request["top_k"],
            request["seed"]) == (3, 1.0, 0.95, 50, 42)
    assert prediction.score == pytest.approx(2.5) and prediction.extra["parsed"] == 2
    plain = model_for(endpoint, decoding="demo", send_extensions=False)
    plain.predict([score_sample()], [pictures(1)])
    assert "top_k" not in endpoint.requests[-1]
    assert "repetition_penalty" not in endpoint.requests[-1]
    assert plain.settings()["not_sent"] == ["top_k", "repetition_penalty"]


def test_the_served_checkpoints_values_are_sent_explicitly(serve, tmp_path):
    """`vllm serve` applies the checkpoint's generation_config to what a request leaves out:
    qbench reads it from --model-path and sends the values, as transformers would use them."""
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"repetition_penalty": 1.05, "temperature": 0.1, "top_k": 1,
         "transformers_version": "4.51.3"}))
    endpoint = serve(lambda n, body: answer(OK))
    model = create_model("openai:served", ModelConfig(model_path=tmp_path, options={
        "base_url": endpoint.url, "decoding": "greedy"}))
    model.predict([score_sample()], [pictures(1)])
    assert endpoint.requests[0]["repetition_penalty"] == 1.05
    assert endpoint.requests[0]["temperature"] == 0.0
    unknown = create_model("openai:served", ModelConfig(options={"base_url": endpoint.url}))
    assert "none read" in unknown.settings()["decoding_source"]["checkpoint_file"]


def test_unreachable_endpoint_and_bad_options():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = create_model("openai:m", ModelConfig(options={
        "base_url": f"http://127.0.0.1:{port}/v1", "retries": 0}))
    (prediction,) = model.predict([score_sample()], [pictures(1)])
    assert prediction.status == "model_error" and "cannot reach" in prediction.error
    with pytest.raises(ModelError, match="base_url must start with http"):
        create_model("openai:m", ModelConfig(options={"base_url": "localhost:8000"}))
    with pytest.raises(ModelError, match="concurrency >= 1"):
        create_model("openai:m", ModelConfig(options={"concurrency": 0}))
    with pytest.raises(ModelError, match="timeout_s > 0"):
        create_model("openai:m", ModelConfig(options={"timeout_s": 0}))


@pytest.mark.slow
def test_run_writes_predictions_and_keeps_the_key_out_of_the_manifest(serve, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-written")
    endpoint = serve(lambda n, body: answer(
        '<think>blocky</think><answer>{"distortion_class": "compression", '
        '"severity": "moderate"}</answer>'))
    result = run(RunConfig(model="openai:served", tasks=["demo-degradation"], limit=3,
                           batch_size=2, output_dir=tmp_path, progress=False,
                           model_options={"base_url": endpoint.url}))
    rows = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").open()]
    assert [(r["status"], r["distortion_class"], r["severity"]) for r in rows] == \
        [("ok", "jpeg", "moderate")] * 3
    assert "sk-never-written" not in (result.run_dir / "manifest.json").read_text()
