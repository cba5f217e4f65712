#!/usr/bin/python3
"""Live checks of `dgpt serve` over loopback HTTP, with nothing but the standard library.

Each case is one ctest test (`--case NAME`; `--list` prints them). A case starts its own
`dgpt serve --listen 127.0.0.1:0` (the bound address is read from the "listening on" line of its
stderr), talks HTTP to it, and stops it with SIGTERM, which must exit 0. Completions are
compared with `dgpt generate --json` for the same prompt, seed and sampling options.
"""
import argparse
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_MODEL = os.path.join(ROOT, "weights", "make_random_model.py")
MODEL_NAME = "serve-model"
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def fail(message):
    print("FAIL:", message, flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


class Server:
    """A `dgpt serve` process."""

    def __init__(self, ctx, model, *extra):
        self.ctx = ctx
        self.log_path = os.path.join(ctx.work, f"serve-{os.getpid()}-{len(ctx.servers)}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [ctx.dgpt, "serve", "--listen", "127.0.0.1:0", "--model", model, "--threads", "1",
             *extra], stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 60
        self.port = None
        while self.port is None:
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.tail())
            if match:
                self.port = int(match.group(1))
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                fail(f"dgpt serve did not start: {self.tail()}")
            else:
                time.sleep(0.05)

    def tail(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-3000:]

    def connect(self, timeout=120):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, raw=None, headers=None):
        """Returns (status, headers, parsed JSON or text)."""
        conn = self.connect()
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        kind = resp.getheader("Content-Type", "")
        text = payload.decode("utf-8")
        return resp.status, resp, json.loads(text) if kind.startswith("application/json") else text

    def complete(self, **body):
        body.setdefault("model", MODEL_NAME)
        status, _, answer = self.request("POST", "/v1/completions", body)
        check(status == 200, f"completion {body}: status {status}: {answer}")
        return answer

    def stream(self, cancel_after=None, **body):
        """Streams a completion; returns (events, status). With cancel_after=k, closes the socket
        after k events."""
        body.setdefault("model", MODEL_NAME)
        body["stream"] = True
        conn = self.connect()
        conn.request("POST", "/v1/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            answer = json.loads(resp.read())
            conn.close()
            return answer, resp.status
        check(resp.getheader("Content-Type", "").startswith("text/event-stream"),
              f"stream content type {resp.getheader('Content-Type')}")
        events = []
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            check(line.startswith(b"data: "), f"an SSE line starts with 'data: ': {line!r}")
            data = line[len(b"data: "):]
            if data == b"[DONE]":
                events.append("[DONE]")
                break
            events.append(json.loads(data))
            if cancel_after is not None and len(events) >= cancel_after:
                conn.sock.shutdown(socket.SHUT_RDWR)
                break
        conn.close()
        return events, 200

    def stop(self):
        """SIGTERM; the exit status must be 0 within 20 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                fail(f"dgpt serve did not stop within 20 s of SIGTERM: {self.tail()}")
        check(self.proc.returncode == 0,
              f"dgpt serve exit status {self.proc.returncode}: {self.tail()}")

    def metrics(self):
        status, _, text = self.request("GET", "/metrics")
        check(status == 200, f"/metrics status {status}")
        return text

    def wait_until_idle(self, seconds=10):
        """Polls /metrics until no sequence runs here or on any stage; returns the text."""
        deadline = time.monotonic() + seconds
        while True:
            text = self.metrics()
            busy = [line for line in text.splitlines()
                    if re.match(r"dgpt_(sequences_running|stage_sequences_in_use)\b", line)
                    and float(line.rsplit(" ", 1)[1]) != 0]
            if not busy:
                return text
            if time.monotonic() > deadline:
                fail(f"KV slots still in use after {seconds} s: {busy}")
            time.sleep(0.1)


class Worker:
    """A `dgpt worker` process for --workers; its port comes from --announce-fd."""

    def __init__(self, ctx, model, name, port=0):
        self.ctx, self.model, self.name, self.port = ctx, model, name, port
        self.log_path = os.path.join(ctx.work, f"{name}-{os.getpid()}.log")
        self.start()

    def start(self):
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            [self.ctx.dgpt, "worker", "--listen", f"127.0.0.1:{self.port}", "--model", self.model,
             "--threads", "1", "--announce-fd", str(write_fd), "--name", self.name],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"), pass_fds=(write_fd,))
        os.close(write_fd)
        ready, _, _ = select.select([read_fd], [], [], 60)
        text = os.read(read_fd, 64).decode() if ready else ""
        os.close(read_fd)
        if not text.strip():
            self.proc.kill()
            fail(f"worker {self.name} did not start")
        self.port = int(text)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"


class Context:
    def __init__(self, dgpt, work, tokenizer_dir):
        self.dgpt, self.work = dgpt, work
        self.tokenizer_dir = tokenizer_dir if tokenizer_dir and os.path.isfile(
            os.path.join(tokenizer_dir, "vocab.json")) else None
        self.servers, self.workers = [], []

    def model(self, name=MODEL_NAME, n_layer=4, n_embd=64, n_positions=256, seed=11):
        """A random model: real GPT-2 vocabulary when ../shared has it (real text), else bytes."""
        out = os.path.join(self.work, name)
        if not os.path.isfile(os.path.join(out, "model.safetensors")):
            args = [MAKE_MODEL, "--out", out, "--n-layer", str(n_layer), "--n-head", "4",
                    "--n-embd", str(n_embd), "--n-positions", str(n_positions), "--seed", str(seed)]
            if self.tokenizer_dir:
                args += ["--tokenizer-dir", self.tokenizer_dir]
            subprocess.run(["/usr/bin/python3", *args], check=True, stdout=subprocess.DEVNULL)
        return out

    def long_model(self):
        """Slow enough per token (~1-5 ms) that 1000 tokens outlast the requests around them."""
        return self.model("serve-long", n_layer=4, n_embd=256, n_positions=1024, seed=12)

    def server(self, *extra, model=None):
        s = Server(self, model or self.model(), *extra)
        self.servers.append(s)
        return s

    def worker(self, model, **kwargs):
        w = Worker(self, model, name=f"w{len(self.workers) + 1}", **kwargs)
        self.workers.append(w)
        return w

    def generate(self, model, prompt, max_tokens, seed, temperature, top_k, top_p, stop=()):
        args = [self.dgpt, "generate", "--model", model, "--json", "--threads", "1",
                "--max-tokens", str(max_tokens), "--seed", str(seed), "--temperature",
                str(temperature), "--top-k", str(top_k), "--top-p", str(top_p), "--ignore-eos"]
        for s in stop:
            args += ["--stop", s]
        if isinstance(prompt, list):
            args += ["--prompt-ids", ",".join(map(str, prompt))]
        else:
            args += ["--prompt", prompt]
        proc = subprocess.run(args, capture_output=True, timeout=120)
        check(proc.returncode == 0, f"dgpt generate failed: {proc.stderr[-2000:]!r}")
        return json.loads(proc.stdout)

    def cleanup(self):
        for p in [s.proc for s in self.servers] + [w.proc for w in self.workers]:
            if p.poll() is None:
                p.kill()
                p.wait()


def stream_text(events):
    """The text of a streamed single-choice completion and its finish reason."""
    check(events and events[-1] == "[DONE]", f"the stream ends with [DONE]: {events[-3:]}")
    chunks = events[:-1]
    for e in chunks[:-1]:
        check(e["choices"][0]["finish_reason"] is None, f"finish_reason null before the end: {e}")
    return "".join(e["choices"][0]["text"] for e in chunks), chunks[-1]["choices"][0]["finish_reason"]


# (prompt, max_tokens, seed, temperature, top_k, top_p, stop): the reference runs.
SAMPLINGS = [
    ("The quick brown fox", 24, 5, 1.0, 0, 1.0, ()),
    ("Hello", 20, 7, 0.8, 40, 0.95, ()),
    ("", 16, 3, 0.0, 0, 1.0, ()),
    ("Grüße, 世界!", 20, 9, 1.3, 0, 0.9, ()),
    ([15, 16, 17, 18, 19, 20, 21], 12, 2, 1.0, 10, 1.0, ()),
]


def compare_with_generate(ctx, server, model):
    for prompt, max_tokens, seed, temperature, top_k, top_p, stop in SAMPLINGS:
        ref = ctx.generate(model, prompt, max_tokens, seed, temperature, top_k, top_p, stop)
        body = dict(prompt=prompt, max_tokens=max_tokens, seed=seed, temperature=temperature,
                    top_k=top_k, top_p=top_p, ignore_eos=True)
        answer = server.complete(**body)
        choice = answer["choices"][0]
        check(choice["text"] == ref["text"],
              f"{prompt!r}: server text {choice['text']!r} != dgpt generate {ref['text']!r}")
        check(choice["finish_reason"] == "length", f"finish_reason {choice['finish_reason']}")
        check(answer["usage"] == {"prompt_tokens": len(ref["prompt_ids"]),
                                  "completion_tokens": len(ref["generated_ids"]),
                                  "total_tokens": len(ref["prompt_ids"]) + len(ref["generated_ids"])},
              f"usage {answer['usage']} for {len(ref['prompt_ids'])} + {len(ref['generated_ids'])}")
        events, status = server.stream(**body)
        check(status == 200, f"stream status {status}: {events}")
        text, finish = stream_text(events)
        check(text == ref["text"], f"{prompt!r}: streamed {text!r} != {ref['text']!r}")
        check(finish == "length", f"streamed finish_reason {finish}")
        print(f"ok: {prompt!r} seed {seed}: {len(ref['generated_ids'])} tokens equal "
              "(JSON and stream)", flush=True)

    # Stop strings: cut before the first appearance, finish_reason "stop".
    ref = ctx.generate(model, "The quick brown fox", 40, 5, 1.0, 0, 1.0)
    stop = ref["text"][len(ref["text"]) // 2:][:3]
    cut = ctx.generate(model, "The quick brown fox", 40, 5, 1.0, 0, 1.0, stop=(stop,))
    body = dict(prompt="The quick brown fox", max_tokens=40, seed=5, temperature=1.0,
                ignore_eos=True, stop=[stop])
    answer = server.complete(**body)["choices"][0]
    check(answer == {"text": cut["text"], "index": 0, "logprobs": None, "finish_reason": "stop"},
          f"with stop {stop!r}: {answer} != {cut['text']!r}")
    text, finish = stream_text(server.stream(**body)[0])
    check((text, finish) == (cut["text"], "stop"), f"streamed with stop: {text!r} {finish}")
    print(f"ok: stop {stop!r} cuts at the same place", flush=True)

    # n = 2 and two prompts: choice j of prompt i uses seed + j, index i * n + j.
    answer = server.complete(prompt=["Hello", "The quick brown fox"], n=2, max_tokens=10, seed=40,
                             ignore_eos=True)
    check([c["index"] for c in answer["choices"]] == [0, 1, 2, 3], f"indexes {answer['choices']}")
    for c in answer["choices"]:
        prompt = ["Hello", "The quick brown fox"][c["index"] // 2]
        ref = ctx.generate(model, prompt, 10, 40 + c["index"] % 2, 1.0, 0, 1.0)
        check(c["text"] == ref["text"], f"choice {c['index']}: {c['text']!r} != {ref['text']!r}")
    events, _ = server.stream(prompt=["Hello", "The quick brown fox"], n=2, max_tokens=10, seed=40,
                              ignore_eos=True, stream_options={"include_usage": True})
    by_index = {}
    for e in events[:-1]:
        for c in e["choices"]:
            by_index[c["index"]] = by_index.get(c["index"], "") + c["text"]
    check(by_index == {c["index"]: c["text"] for c in answer["choices"]},
          f"streamed choices {by_index}")
    check(events[-2]["choices"] == [] and events[-2]["usage"] == answer["usage"],
          f"the usage chunk {events[-2]} (expected {answer['usage']})")
    print("ok: n=2 x 2 prompts: seeds seed+j, indexes i*n+j, streamed the same, usage chunk",
          flush=True)


@case
def make_models(ctx):
    """Run first (a ctest fixture), so parallel cases never race to create the models."""
    ctx.model()
    ctx.long_model()
    print("ok: models ready")


@case
def completions_equal_generate_local(ctx):
    server = ctx.server()
    compare_with_generate(ctx, server, ctx.model())
    server.stop()


@case
def completions_equal_generate_pipeline(ctx):
    server = ctx.server("--local-workers", "3", "--worker-threads", "1")
    compare_with_generate(ctx, server, ctx.model())
    server.wait_until_idle()
    server.stop()


def expect_error(server, status, body=None, raw=None, path="/v1/completions", param=None,
                 code=None, needle=None, method="POST"):
    got, resp, answer = server.request(method, path, body=body, raw=raw)
    what = f"{method} {path} {str(body if raw is None else raw[:60])[:120]}"
    check(got == status, f"{what}: status {got}, expected {status}: {answer}")
    check(isinstance(answer, dict) and set(answer) == {"error"} and
          set(answer["error"]) == {"message", "type", "param", "code"},
          f"{what}: not OpenAI's error shape: {answer}")
    error = answer["error"]
    check(error["message"] and "\n" not in error["message"], f"{what}: one-line message {error}")
    if param is not None:
        check(error["param"] == param, f"{what}: param {error['param']}, expected {param}")
    if code is not None:
        check(error["code"] == code, f"{what}: code {error['code']}, expected {code}")
    if needle is not None:
        check(needle in error["message"], f"{what}: {needle!r} not in {error['message']!r}")
    print(f"ok: {got} {error['type']}/{error['code']}: {error['message']}", flush=True)
    # The server keeps serving: a good request right after works.
    answer = server.complete(prompt="Hello", max_tokens=2, seed=1)
    check(len(answer["choices"]) == 1, f"good request after the error: {answer}")


@case
def bad_inputs(ctx):
    server = ctx.server("--max-body-bytes", "4096")
    m = MODEL_NAME
    expect_error(server, 400, raw=b"{not json", needle="not valid JSON")
    expect_error(server, 400, raw=b"[1, 2, 3]", needle="JSON object")
    expect_error(server, 400, body={"prompt": "x"}, param="model")
    expect_error(server, 404, body={"model": "gpt-4", "prompt": "x"}, param="model",
                 code="model_not_found", needle="gpt-4")
    expect_error(server, 400, body={"model": m, "prompt": {"a": 1}}, param="prompt")
    expect_error(server, 400, body={"model": m, "max_tokens": "5"}, param="max_tokens")
    expect_error(server, 400, body={"model": m, "max_tokens": -1}, param="max_tokens")
    expect_error(server, 400, body={"model": m, "max_tokens": 257}, param="max_tokens")
    expect_error(server, 400, body={"model": m, "temperature": -1}, param="temperature")
    expect_error(server, 400, body={"model": m, "top_p": 0}, param="top_p")
    expect_error(server, 400, body={"model": m, "n": 9}, param="n")
    expect_error(server, 400, body={"model": m, "stop": ["a", "b", "c", "d", "e"]}, param="stop")
    expect_error(server, 400, body={"model": m, "stream": "yes"}, param="stream")
    expect_error(server, 400, body={"model": m, "logprobs": 1}, param="logprobs")
    expect_error(server, 400, body={"model": m, "echo": True}, param="echo")
    expect_error(server, 400, body={"model": m, "best_of": 3}, param="best_of")
    expect_error(server, 400, body={"model": m, "prompt": [1, 2, 10 ** 6]}, param="prompt",
                 needle="vocabulary")
    expect_error(server, 400, body={"model": m, "prompt": [1] * 250, "max_tokens": 10},
                 param="prompt", code="context_length_exceeded", needle="256")
    expect_error(server, 400, body={"model": m, "prompt": "word " * 600}, param="prompt",
                 code="context_length_exceeded")
    expect_error(server, 413, raw=b'{"model": "x", "prompt": "' + b"a" * 8000 + b'"}',
                 code="request_too_large", needle="4096")
    expect_error(server, 400, path="/generate", raw=b"nope")
    expect_error(server, 404, path="/generate", body={"model": "other", "prompt": "x"},
                 code="model_not_found")
    expect_error(server, 404, path="/no/such/route", method="GET", code="not_found")
    expect_error(server, 404, path="/v1/models/other", method="GET", code="model_not_found")
    # Streaming requests are validated before the stream starts.
    events, status = server.stream(model=m, max_tokens=1000)
    check(status == 400 and events["error"]["param"] == "max_tokens", f"stream: {status} {events}")
    print("ok: a bad streaming request is a 400 before any event", flush=True)
    server.stop()


@case
def down_worker_is_503(ctx):
    model = ctx.model()
    workers = [ctx.worker(model), ctx.worker(model)]
    server = ctx.server("--workers", ",".join(w.address for w in workers), "--timeout", "5")
    server.complete(prompt="Hello", max_tokens=4, seed=1)
    workers[1].proc.kill()
    workers[1].proc.wait()
    status, _, answer = server.request("POST", "/v1/completions",
                                       {"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 4})
    check(status == 503, f"status {status} with a worker down: {answer}")
    message = answer["error"]["message"]
    check("stage 2" in message or workers[1].address in message,
          f"the error names the stage: {message!r}")
    print(f"ok: 503 {message}", flush=True)
    events, status = server.stream(model=MODEL_NAME, prompt="Hi", max_tokens=4)
    check(status == 200 and "error" in events[-1], f"a stream ends with an error event: {events}")
    print(f"ok: stream: {events[-1]['error']['message']}", flush=True)
    status, _, health = server.request("GET", "/health")
    check(status == 503 and health["status"] == "degraded", f"/health {status} {health}")
    check([s["up"] for s in health["stages"]] == [True, False], f"/health stages {health}")
    print("ok: /health degraded, stage 2 down", flush=True)
    workers[1].start()  # same port
    answer = server.complete(prompt="Hello", max_tokens=4, seed=1)
    status, _, health = server.request("GET", "/health")
    check(status == 200 and health["status"] == "ok", f"/health after restart {status} {health}")
    print("ok: the worker came back and the server serves again", flush=True)
    server.stop()


# A cancelled stream holds its slot until the server's next write fails (one token later), while
# its client thread already sends the next request: leave room for that overlap.
LOAD_MAX_SEQUENCES = "32"


def load_test(ctx, server, requests=64, concurrency=16):
    """64 requests from 16 threads: plain, streamed, and streams cancelled after one event."""
    configs = [dict(prompt=p, max_tokens=12 + 3 * i, seed=100 + i, temperature=1.0, top_k=20,
                    ignore_eos=True)
               for i, p in enumerate(["Hello", "The quick brown fox", "", "Once upon a time",
                                      "Grüße", [5, 6, 7, 8]])]
    references = [server.complete(**c)["choices"][0]["text"] for c in configs]
    failures, lock = [], threading.Lock()
    counts = {"plain": 0, "stream": 0, "cancelled": 0}

    def one(k):
        config = configs[k % len(configs)]
        kind = ["plain", "stream", "cancelled", "stream"][k % 4]
        try:
            if kind == "plain":
                text = server.complete(**config)["choices"][0]["text"]
            elif kind == "stream":
                events, status = server.stream(**config)
                if status != 200:
                    raise RuntimeError(f"status {status}: {events}")
                text, _ = stream_text(events)
            else:
                long = dict(config, max_tokens=200)
                events, status = server.stream(cancel_after=1, **long)
                if status != 200 or len(events) != 1:
                    raise RuntimeError(f"cancelled stream: status {status}: {events}")
                text = None
            if text is not None and text != references[k % len(configs)]:
                raise RuntimeError(f"text {text!r} != {references[k % len(configs)]!r}")
            with lock:
                counts[kind] += 1
        except BaseException as e:  # noqa: BLE001 — check() exits; report it here instead
            with lock:
                failures.append(f"request {k} ({kind}): {e!r}")

    start = time.monotonic()
    threads = []
    next_request = 0
    while next_request < requests or threads:
        threads = [t for t in threads if t.is_alive()]
        while len(threads) < concurrency and next_request < requests:
            t = threading.Thread(target=one, args=(next_request,))
            t.start()
            threads.append(t)
            next_request += 1
        time.sleep(0.01)
        check(time.monotonic() - start < 240, "the load test finished within 240 s")
    check(not failures, f"{len(failures)} failures: " + "; ".join(failures[:5]))
    check(sum(counts.values()) == requests, f"every request answered: {counts}")
    print(f"ok: {requests} requests ({counts}) in {time.monotonic() - start:.1f} s, "
          "all equal to their single-request result", flush=True)
    text = server.wait_until_idle()
    stages = re.findall(r"^dgpt_stage_sequences_in_use\{(.*)\} 0$", text, re.M)
    check(stages, "/metrics reports the stages' KV slots")
    print(f"ok: no KV slot in use on {len(stages)} stage(s) after the load", flush=True)
    requests_200 = sum(int(v) for v in re.findall(
        r'^dgpt_http_requests_total\{route="/v1/completions",code="200"\} (\d+)$', text, re.M))
    check(requests_200 >= requests + len(configs), f"/metrics counted {requests_200} completions")
    # The cancelled streams stopped early instead of running to their 200 tokens.
    finished = sum(configs[k % len(configs)]["max_tokens"] for k in range(requests) if k % 4 != 2)
    finished += sum(c["max_tokens"] for c in configs)
    generated = int(re.search(r"^dgpt_generated_tokens_total (\d+)$", text, re.M).group(1))
    cancelled = generated - finished
    check(0 <= cancelled < counts["cancelled"] * 200 // 2,
          f"the {counts['cancelled']} cancelled streams generated {cancelled} tokens")
    print(f"ok: the {counts['cancelled']} cancelled streams stopped after {cancelled} tokens "
          f"(of {counts['cancelled'] * 200} asked for)", flush=True)


@case
def load_local(ctx):
    server = ctx.server("--max-sequences", LOAD_MAX_SEQUENCES)
    load_test(ctx, server)
    server.stop()


@case
def load_pipeline(ctx):
    server = ctx.server("--local-workers", "3", "--worker-threads", "1", "--max-sequences",
                        LOAD_MAX_SEQUENCES)
    load_test(ctx, server)
    server.stop()


@case
def busy_is_429(ctx):
    server = ctx.server("--max-sequences", "2", model=ctx.long_model())
    long = {"model": "serve-long", "prompt": "Hello", "max_tokens": 1000, "ignore_eos": True,
            "stream": True}
    held = []
    for _ in range(2):  # two long streams, each past its first event
        conn = server.connect()
        conn.request("POST", "/v1/completions", body=json.dumps(long))
        resp = conn.getresponse()
        check(resp.status == 200, f"long stream status {resp.status}")
        check(resp.readline().startswith(b"data: "), "the long stream started")
        held.append(conn)
    started = time.monotonic()
    status, _, answer = server.request("POST", "/v1/completions",
                                       {"model": "serve-long", "prompt": "Hi", "max_tokens": 2})
    elapsed = time.monotonic() - started
    check(status == 429, f"a third completion with --max-sequences 2: {status} {answer}")
    check(answer["error"]["type"] == "rate_limit_error" and "busy" in answer["error"]["message"],
          f"429 error {answer}")
    check(elapsed < 2, f"the 429 came at once ({elapsed:.2f} s)")
    print(f"ok: 429 in {elapsed * 1e3:.0f} ms: {answer['error']['message']}", flush=True)
    status, _, health = server.request("GET", "/health")
    check(status == 200, "/health still answers while the slots are full")
    for conn in held:  # hang up: the server stops both generations
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    text = server.wait_until_idle()
    check(re.search(r"^dgpt_busy_rejections_total 1$", text, re.M), "one busy rejection counted")
    generated = int(re.search(r"^dgpt_generated_tokens_total (\d+)$", text, re.M).group(1))
    check(generated < 1000, f"hanging up stopped the generations ({generated} of 2000 tokens)")
    server.complete(model="serve-long", prompt="Hi", max_tokens=2)
    print("ok: the hung-up streams freed their slots; the next request runs", flush=True)
    server.stop()


def parse_prometheus(text):
    """{(name, labels): value}; checks every line's syntax and that histograms add up."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*\})? '
                             r'(\S+)', line)
        check(match, f"a Prometheus sample line: {line!r}")
        samples[(match.group(1), match.group(2) or "")] = float(match.group(3))
    for name, kind in types.items():
        if kind != "histogram":
            continue
        buckets = [v for (n, labels), v in samples.items() if n == name + "_bucket"]
        check(buckets == sorted(buckets), f"{name} buckets are cumulative: {buckets}")
        check(buckets[-1] == samples[(name + "_count", "")], f"{name}: +Inf bucket = count")
    return samples, types


@case
def endpoint_shapes(ctx):
    server = ctx.server()
    status, _, models = server.request("GET", "/v1/models")
    check(status == 200 and models["object"] == "list" and len(models["data"]) == 1, f"{models}")
    check(models["data"][0]["id"] == MODEL_NAME and models["data"][0]["object"] == "model",
          f"model object {models['data'][0]}")
    status, _, one = server.request("GET", f"/v1/models/{MODEL_NAME}")
    check(status == 200 and one == models["data"][0], f"/v1/models/{MODEL_NAME}: {one}")
    print(f"ok: /v1/models {models}", flush=True)

    status, _, health = server.request("GET", "/health")
    check(status == 200 and health["status"] == "ok", f"/health {health}")
    check(health["stages"] == [{"address": "local", "name": "local", "layers": [0, 4],
                                "up": True, "last_latency_ms": 0.0}], f"/health {health}")
    print(f"ok: /health {health}", flush=True)

    answer = server.complete(prompt="Hello", max_tokens=5, seed=3)
    check(re.fullmatch(r"cmpl-[A-Za-z0-9]{24}", answer["id"]), f"id {answer['id']}")
    check(answer["object"] == "text_completion" and answer["model"] == MODEL_NAME, f"{answer}")
    check(abs(answer["created"] - time.time()) < 60, f"created {answer['created']}")
    check(set(answer) == {"id", "object", "created", "model", "choices", "usage"}, f"{answer}")
    check(set(answer["choices"][0]) == {"text", "index", "logprobs", "finish_reason"}, f"{answer}")

    status, _, simple = server.request("POST", "/generate", {"prompt": "Hello", "max_tokens": 6,
                                                             "seed": 4})
    check(status == 200 and isinstance(simple["text"], str), f"/generate {status} {simple}")
    ref = ctx.generate(ctx.model(), "Hello", 6, 4, 0.8, 40, 0.95)  # dgpt generate's defaults
    check(simple["text"] == ref["text"], f"/generate {simple['text']!r} != {ref['text']!r}")
    print(f"ok: /generate {simple}", flush=True)

    status, resp, page = server.request("GET", "/")
    check(status == 200 and resp.getheader("Content-Type").startswith("text/html") and
          "<html" in page.lower(), f"GET / {status} {page[:200]!r}")
    print(f"ok: GET / serves {len(page)} bytes of HTML", flush=True)

    samples, types = parse_prometheus(server.metrics())
    for name, kind in [("dgpt_http_requests_total", "counter"),
                       ("dgpt_prompt_tokens_total", "counter"),
                       ("dgpt_generated_tokens_total", "counter"),
                       ("dgpt_request_duration_seconds", "histogram"),
                       ("dgpt_time_to_first_token_seconds", "histogram"),
                       ("dgpt_decode_step_seconds", "histogram"),
                       ("dgpt_sequences_running", "gauge"),
                       ("dgpt_busy_rejections_total", "counter"),
                       ("dgpt_stage_sequences_in_use", "gauge"),
                       ("dgpt_stage_compute_seconds_total", "counter"),
                       ("dgpt_stage_forwards_total", "counter"),
                       ("dgpt_stage_round_trip_seconds", "gauge")]:
        check(types.get(name) == kind, f"/metrics has {kind} {name}")
    check(samples[("dgpt_generated_tokens_total", "")] == 11, "11 tokens generated so far")
    check(samples[("dgpt_http_requests_total", '{route="/v1/completions",code="200"}')] == 1,
          "one completion counted")
    check(samples[("dgpt_request_duration_seconds_count", "")] == 2, "two requests timed")
    check(samples[("dgpt_stage_forwards_total", '{stage="1",address="local",layers="0:4"}')] > 0,
          "local forwards counted")
    print(f"ok: /metrics: {len(samples)} samples in {len(types)} families", flush=True)
    server.stop()


@case
def sigterm_mid_stream(ctx):
    server = ctx.server("--local-workers", "2", "--worker-threads", "1", model=ctx.long_model())
    conn = server.connect()
    conn.request("POST", "/v1/completions", body=json.dumps(
        {"model": "serve-long", "prompt": "Hello", "max_tokens": 1000, "ignore_eos": True,
         "stream": True}))
    resp = conn.getresponse()
    check(resp.readline().startswith(b"data: "), "the stream started")
    children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    check(len(children) == 2, f"two local workers run: {children}")
    started = time.monotonic()
    server.stop()
    rest = resp.read().decode()
    check('"error"' in rest or "[DONE]" in rest, f"the stream ends cleanly: {rest[-300:]!r}")
    print(f"ok: SIGTERM mid-stream: exit 0 in {time.monotonic() - started:.1f} s", flush=True)
    for pid in children:
        check(not os.path.exists(f"/proc/{pid}"), f"local worker {pid} outlived the server")
    print("ok: the local workers stopped with the server", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dgpt")
    parser.add_argument("--work", default="/tmp/dgpt-serve-test")
    parser.add_argument("--tokenizer-dir")
    parser.add_argument("--case")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    os.makedirs(args.work, exist_ok=True)
    ctx = Context(args.dgpt, args.work, args.tokenizer_dir)
    if not ctx.tokenizer_dir:
        print("note: ../shared/gpt2-tokenizer is absent: the models use the byte tokenizer")
    names = [args.case] if args.case else list(CASES)
    try:
        for name in names:
            print(f"== {name}", flush=True)
            CASES[name](ctx)
    finally:
        ctx.cleanup()
    print("all passed:", ", ".join(names))


if __name__ == "__main__":
    main()
