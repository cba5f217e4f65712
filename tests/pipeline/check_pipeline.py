#!/usr/bin/python3
"""Multi-process pipeline tests on loopback: real `dgpt worker` processes, real TCP.

Each case is one ctest test (`--case NAME`; `--list` prints them). The reference for every
distributed run is the single-process run of the same binary with the same options: tokens
equal and logits byte-identical (f32 wire).
"""
import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_MODEL = os.path.join(ROOT, "weights", "make_random_model.py")
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


class Worker:
    """A `dgpt worker` process; its bound port is read from --announce-fd."""

    def __init__(self, ctx, model, port=0, extra=(), name="w"):
        self.ctx, self.model, self.extra, self.name = ctx, model, list(extra), name
        self.log_path = os.path.join(ctx.work, f"{name}-{os.getpid()}.log")
        self.port = port
        self.start()

    def start(self):
        read_fd, write_fd = os.pipe()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.ctx.dgpt, "worker", "--listen", f"127.0.0.1:{self.port}", "--model", self.model,
             "--threads", "1", "--announce-fd", str(write_fd), "--name", self.name, *self.extra],
            stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(write_fd,))
        os.close(write_fd)
        ready, _, _ = select.select([read_fd], [], [], 60)
        text = os.read(read_fd, 64).decode() if ready else ""
        os.close(read_fd)
        if not text.strip():
            self.proc.kill()
            fail(f"worker {self.name} did not start: {self.tail()}")
        self.port = int(text)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def tail(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                fail(f"worker {self.name} did not stop within 10 s of SIGTERM")
        return self.proc.returncode


class Context:
    def __init__(self, dgpt, work):
        self.dgpt, self.work = dgpt, work
        self.workers = []

    def model(self, name, n_layer=4, n_embd=64, n_head=4, n_positions=128, seed=7):
        """A random model with the byte-level tokenizer (made once; a ctest fixture)."""
        out = os.path.join(self.work, name)
        if not os.path.isfile(os.path.join(out, "model.safetensors")):
            subprocess.run(["/usr/bin/python3", MAKE_MODEL, "--out", out, "--n-layer", str(n_layer),
                            "--n-head", str(n_head), "--n-embd", str(n_embd), "--n-positions",
                            str(n_positions), "--seed", str(seed), "--linear-std",
                            str(1.6 / n_embd ** 0.5)], check=True, stdout=subprocess.DEVNULL)
        return out

    def worker(self, model, **kwargs):
        kwargs.setdefault("name", f"w{len(self.workers) + 1}")
        w = Worker(self, model, **kwargs)
        self.workers.append(w)
        return w

    def run(self, *args, expect=0, stdin=None, timeout=300):
        proc = subprocess.run([self.dgpt, *args], input=stdin, capture_output=True, timeout=timeout)
        if expect is not None and proc.returncode != expect:
            fail(f"dgpt {' '.join(args)}: exit {proc.returncode}, expected {expect}\n"
                 f"stdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-3000:]!r}")
        return proc

    def generate(self, model, *args, logits=None, expect=0):
        extra = ["--logits-out", logits] if logits else []
        proc = self.run("generate", "--model", model, "--json", "--threads", "1", *extra, *args,
                        expect=expect)
        return json.loads(proc.stdout) if expect == 0 else proc

    def cleanup(self):
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()


def prompt_ids(n, vocab=256, seed=1):
    rng = random.Random(seed)
    return ",".join(str(rng.randrange(vocab)) for _ in range(n))


def same_bytes(path_a, path_b):
    with open(path_a, "rb") as a, open(path_b, "rb") as b:
        return a.read() == b.read()


def compare_with_single_process(ctx, model, addresses, label, extra=(), both=(), single_model=None):
    """Greedy and seeded runs through the workers equal the single-process runs exactly.

    extra: flags for the pipeline run only; both: for both runs; single_model: the model folder
    of the single-process run when it differs (a coordinator shard's full checkpoint)."""
    ids = prompt_ids(37)  # longer than one prefill chunk of 8
    runs = [("greedy", ["--temperature", "0"]),
            ("seeded", ["--temperature", "1.0", "--top-k", "0", "--top-p", "1", "--seed", "5"])]
    for kind, sampling in runs:
        common = ["--prompt-ids", ids, "--max-tokens", "24", "--ignore-eos", "--prefill-chunk", "8",
                  *sampling]
        single_logits = os.path.join(ctx.work, f"{label}-{kind}-single.f32")
        piped_logits = os.path.join(ctx.work, f"{label}-{kind}-pipeline.f32")
        single = ctx.generate(single_model or model, *common, *both, logits=single_logits)
        piped = ctx.generate(model, *common, *both, "--workers", ",".join(addresses), *extra,
                             logits=piped_logits)
        check(single["generated_ids"] == piped["generated_ids"],
              f"{label} {kind}: pipeline tokens {piped['generated_ids']} != single-process "
              f"{single['generated_ids']}")
        check(same_bytes(single_logits, piped_logits),
              f"{label} {kind}: logits are not bit-identical to single-process")
        check(all(s["sequences_in_use"] == 0 for s in piped["stages"]),
              f"{label}: KV slots still in use after the request: {piped['stages']}")
        print(f"ok: {label} {kind}: {len(piped['generated_ids'])} tokens and "
              f"{os.path.getsize(piped_logits)} bytes of logits identical", flush=True)


@case
def make_models(ctx):
    """Run first (a ctest fixture), so parallel cases never race to create the models."""
    ctx.model("pipe-a")
    ctx.model("pipe-b", seed=8)  # same shape, other weights
    ctx.model("pipe-wide", n_layer=3, n_embd=768, n_head=12, n_positions=1024, seed=9)
    print("ok: models ready")


def chain(ctx, stages):
    model = ctx.model("pipe-a")
    workers = [ctx.worker(model) for _ in range(stages)]
    compare_with_single_process(ctx, model, [w.address for w in workers], f"{stages} stages")


@case
def chain_2_stages(ctx):
    chain(ctx, 2)


@case
def chain_3_stages(ctx):
    chain(ctx, 3)


@case
def chain_4_stages(ctx):
    chain(ctx, 4)


@case
def explicit_layers_and_local_layers(ctx):
    model = ctx.model("pipe-a")
    a, b = ctx.worker(model), ctx.worker(model)
    compare_with_single_process(ctx, model, [a.address, b.address], "layers 0:1,1:4",
                                ["--layers", "0:1,1:4"])
    compare_with_single_process(ctx, model, [a.address, b.address], "local prefix 0:1",
                                ["--local-layers", "0:1"])
    compare_with_single_process(ctx, model, [a.address, b.address], "local suffix 3:4",
                                ["--local-layers", "3:4"])
    bad = ctx.generate(model, "--prompt-ids", "1,2", "--workers", f"{a.address},{b.address}",
                       "--layers", "0:1,2:4", expect=1)
    check(b"contiguous" in bad.stderr, f"a gap in --layers is explained: {bad.stderr!r}")


@case
def local_workers(ctx):
    model = ctx.model("pipe-a")
    ids = prompt_ids(20)
    common = ["--prompt-ids", ids, "--max-tokens", "16", "--temperature", "0", "--ignore-eos"]
    single = ctx.generate(model, *common)
    piped = ctx.generate(model, *common, "--local-workers", "3")
    check(single["generated_ids"] == piped["generated_ids"], "--local-workers 3 equals single")
    check(len(piped["stages"]) == 3, "three stages reported")
    print("ok: --local-workers 3 gives the single-process tokens")


@case
def f16_wire(ctx):
    model = ctx.model("pipe-a")
    a, b = ctx.worker(model), ctx.worker(model)
    common = ["--prompt-ids", prompt_ids(12), "--max-tokens", "12", "--temperature", "0",
              "--ignore-eos"]
    single = ctx.generate(model, *common)
    piped = ctx.generate(model, *common, "--workers", f"{a.address},{b.address}",
                         "--wire-dtype", "f16")
    same = sum(x == y for x, y in zip(single["generated_ids"], piped["generated_ids"]))
    print(f"ok: f16 wire: {same}/{len(single['generated_ids'])} greedy tokens equal single-process "
          "(f16 rounds activations, so small differences are expected)")
    check(same >= 1 and piped["generated_ids"][0] == single["generated_ids"][0],
          "the first token survives f16 rounding on this model")


@case
def wrong_weights_refused(ctx):
    model_a, model_b = ctx.model("pipe-a"), ctx.model("pipe-b", seed=8)
    good, wrong = ctx.worker(model_a), ctx.worker(model_b)
    proc = ctx.generate(model_a, "--prompt-ids", "1,2,3", "--workers",
                        f"{good.address},{wrong.address}", expect=1)
    err = proc.stderr.decode()
    check(err.count("\n") == 1, f"one line: {err!r}")
    check("stage 2/2" in err and "wrong_model" in err and "different weights" in err,
          f"the error names the stage and the mismatch: {err!r}")
    print("ok:", err.strip())


@case
def auth_key(ctx):
    model = ctx.model("pipe-a")
    key = os.path.join(ctx.work, "auth.key")
    other = os.path.join(ctx.work, "other.key")
    with open(key, "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    with open(other, "w") as f:
        f.write("fedcba9876543210fedcba9876543210\n")
    a = ctx.worker(model, extra=["--auth-key-file", key])
    b = ctx.worker(model, extra=["--auth-key-file", key])
    workers = f"{a.address},{b.address}"
    common = ["--prompt-ids", "1,2,3", "--max-tokens", "4", "--temperature", "0"]
    no_key = ctx.generate(model, *common, "--workers", workers, expect=1).stderr.decode()
    check("auth" in no_key and no_key.count("\n") == 1, f"no key is refused: {no_key!r}")
    wrong = ctx.generate(model, *common, "--workers", workers, "--auth-key-file", other,
                         expect=1).stderr.decode()
    check("auth" in wrong, f"a wrong key is refused: {wrong!r}")
    right = ctx.generate(model, *common, "--workers", workers, "--auth-key-file", key)
    check(len(right["generated_ids"]) >= 1, "the right key works")
    # A raw peer that never authenticates gets nothing but an error and a closed socket.
    with socket.create_connection(("127.0.0.1", a.port), timeout=5) as s:
        s.sendall(hello_frame(auth_required=False))
        data = read_until_closed(s)
    check(b"auth" in data or data == b"" or len(data) > 0, "unauthenticated peer dropped")
    check("auth" in a.tail(), "the worker logged the refusal")
    print("ok: without key:", no_key.strip())
    print("ok: wrong key:", wrong.strip())


def hello_frame(auth_required=False):
    name = b"raw-test"
    payload = struct.pack("<HHB", 1, 1, 0) + struct.pack("<I", len(name)) + name + struct.pack(
        "<IQIB", 1, 0, 1 << 20, 1 if auth_required else 0) + bytes(32)
    return struct.pack("<IHHIQI", 0x54504744, 1, 1, 0, 0, len(payload)) + payload


def read_until_closed(sock, limit=1 << 20):
    data = b""
    sock.settimeout(10)
    while len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            fail("the worker kept a bad connection open for 10 s")
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


@case
def malformed_frames_refused(ctx):
    model = ctx.model("pipe-a")
    a, b = ctx.worker(model), ctx.worker(model)
    workers = f"{a.address},{b.address}"
    common = ["--prompt-ids", prompt_ids(10), "--max-tokens", "8", "--temperature", "0",
              "--ignore-eos"]
    # A coordinator session that stays connected while bad peers come and go.
    session = subprocess.Popen([ctx.dgpt, "generate", "--model", model, "--json", "--lines",
                                "--threads", "1", "--workers", workers, "--max-tokens", "8",
                                "--temperature", "0", "--ignore-eos"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        first = session_request(session, "hello")
        header = lambda magic=0x54504744, version=1, mtype=1, flags=0, length=0: struct.pack(
            "<IHHIQI", magic, version, mtype, flags, 0, length)
        bad_frames = {
            "bad magic": header(magic=0x12345678),
            "wrong version": header(version=99),
            "unknown type": header(mtype=200),
            "oversized length": header(length=0xFFFFFFFF),
            "truncated frame": header(length=100) + b"abc",
            "random bytes": bytes(random.Random(3).randrange(256) for _ in range(300)),
            "bad payload": header(length=3) + b"xyz",
        }
        for label, frame in bad_frames.items():
            with socket.create_connection(("127.0.0.1", a.port), timeout=5) as s:
                s.sendall(frame)
                if label == "truncated frame":
                    s.shutdown(socket.SHUT_WR)
                read_until_closed(s)
            print(f"ok: {label}: connection closed by the worker", flush=True)
        again = session_request(session, "hello")
        check(again["generated_ids"] == first["generated_ids"],
              "the open session still works and gives the same tokens")
        single = ctx.generate(model, "--prompt", "hello", "--max-tokens", "8", "--temperature",
                              "0", "--ignore-eos")
        check(single["generated_ids"] == first["generated_ids"], "and equals single-process")
    finally:
        session.stdin.close()
        session.wait(timeout=30)
    log = a.tail()
    for phrase in ["magic", "version", "exceeds"]:
        check(phrase in log, f"the worker log names '{phrase}': {log[-1500:]}")
    print("ok: every malformed frame refused; other connections unharmed")


def session_request(session, line, timeout=60):
    session.stdin.write((line + "\n").encode())
    session.stdin.flush()
    ready, _, _ = select.select([session.stdout], [], [], timeout)
    if not ready:
        fail(f"no answer within {timeout} s for {line!r}")
    out = session.stdout.readline()
    if not out:
        fail(f"the coordinator exited: {session.stderr.read().decode()[-2000:]}")
    return json.loads(out)


@case
def worker_killed_mid_generation(ctx):
    model = ctx.model("pipe-wide", n_layer=3, n_embd=768, n_head=12, n_positions=1024, seed=9)
    workers = [ctx.worker(model) for _ in range(3)]
    timeout_s = 3
    session = subprocess.Popen([ctx.dgpt, "generate", "--model", model, "--lines", "--threads",
                                "1", "--workers", ",".join(w.address for w in workers),
                                "--timeout", str(timeout_s), "--max-tokens", "900",
                                "--temperature", "0", "--ignore-eos"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        # Request 1 runs to completion.
        session.stdin.write(b"first\n")
        session.stdin.flush()
        check(read_line(session.stdout, 120), "request 1 completes")
        # Request 2: kill stage 2 once text is flowing.
        session.stdin.write(b"second\n")
        session.stdin.flush()
        ready, _, _ = select.select([session.stdout], [], [], 60)
        check(ready, "request 2 starts streaming")
        os.read(session.stdout.fileno(), 1)
        killed_at = time.monotonic()
        workers[1].kill()
        error = read_error_line(session.stderr, timeout_s + 15)
        elapsed = time.monotonic() - killed_at
        check(error and b"stage 2/3" in error, f"the error names stage 2/3: {error!r}")
        check(elapsed < timeout_s + 10, f"error after {elapsed:.1f} s (timeout {timeout_s} s)")
        read_line(session.stdout, 10)  # the rest of the cut-off line
        print(f"ok: after SIGKILL: {error.decode().strip()} ({elapsed:.1f} s)", flush=True)
        # Request 3 while the worker is down: a clear error, no hang.
        session.stdin.write(b"third\n")
        session.stdin.flush()
        error = read_error_line(session.stderr, timeout_s + 15)
        check(error and b"stage 2/3" in error, f"while down: {error!r}")
        print(f"ok: while down: {error.decode().strip()}", flush=True)
        # Request 4 after a restart on the same port succeeds.
        workers[1].start()
        session.stdin.write(b"fourth\n")
        session.stdin.flush()
        answer = read_line(session.stdout, 120)
        if not answer:
            session.stdin.close()
            fail("request 4 after the restart did not complete: " +
                 session.stderr.read().decode()[-2000:])
        print("ok: the coordinator reconnected after the worker came back", flush=True)
    finally:
        session.stdin.close()
        session.wait(timeout=30)


def read_error_line(stream, timeout):
    """The next `dgpt generate: ...` line on stderr (skipping plan, notes and timings)."""
    deadline = time.monotonic() + timeout
    while True:
        line = read_line(stream, max(0.0, deadline - time.monotonic()))
        if line is None or line.startswith(b"dgpt generate:"):
            return line


def read_line(stream, timeout):
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([stream], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            return data or None
        data += chunk
    return data


@case
def kv_slots_never_leak(ctx):
    model = ctx.model("pipe-a")
    a = ctx.worker(model, extra=["--max-sequences", "2"])
    b = ctx.worker(model, extra=["--max-sequences", "2"])
    session = subprocess.Popen([ctx.dgpt, "generate", "--model", model, "--json", "--lines",
                                "--threads", "1", "--workers", f"{a.address},{b.address}",
                                "--max-tokens", "6", "--temperature", "0.9", "--seed", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        for i in range(25):
            out = session_request(session, f"request number {i}")
            check("error" not in out, f"request {i}: {out}")
            in_use = [s["sequences_in_use"] for s in out["stages"]]
            check(in_use == [0, 0], f"request {i}: slots in use {in_use}")
    finally:
        session.stdin.close()
        session.wait(timeout=30)
    print("ok: 25 sequences with 2 slots per stage; zero in use after each")


@case
def shards_from_split(ctx):
    model = ctx.model("pipe-a")
    out = os.path.join(ctx.work, f"pipe-a-split-{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    ctx.run("split", "--model", model, "--stages", "0:1,1:3,3:4", "--out", out)
    workers = [ctx.worker(os.path.join(out, f"stage-{k}")) for k in range(3)]
    compare_with_single_process(ctx, model, [w.address for w in workers], "shards",
                                ["--layers", "0:1,1:3,3:4"])
    # The coordinator can run from its own shard too: it needs only embeddings and head, and
    # takes the stages' fingerprints from the manifest.
    coordinator = os.path.join(out, "coordinator")
    common = ["--prompt-ids", prompt_ids(20), "--max-tokens", "10", "--temperature", "0",
              "--ignore-eos"]
    single = ctx.generate(model, *common)
    piped = ctx.generate(coordinator, *common, "--layers", "0:1,1:3,3:4", "--workers",
                         ",".join(w.address for w in workers))
    check(single["generated_ids"] == piped["generated_ids"], "coordinator shard gives the same")
    print("ok: coordinator running from coordinator/ (manifest fingerprints) gives the same tokens")
    proc = ctx.generate(model, "--prompt-ids", "1,2", "--workers",
                        ",".join(w.address for w in workers), expect=1)
    err = proc.stderr.decode()
    check("shard" in err and "stage" in err, f"an even split does not fit these shards: {err!r}")
    print("ok:", err.strip())
    shutil.rmtree(out, ignore_errors=True)


@case
def weight_formats(ctx):
    """f16 and q8_0 weights: workers computing in them (--dtype) and q8_0 shards from
    `dgpt split --dtype q8_0` give exactly the single-process --dtype output."""
    model = ctx.model("pipe-a")
    for fmt in ("f16", "q8_0"):
        workers = [ctx.worker(model, extra=("--dtype", fmt)) for _ in range(2)]
        compare_with_single_process(ctx, model, [w.address for w in workers], f"--dtype {fmt}",
                                    both=("--dtype", fmt))
        for w in workers:
            w.stop()
    out = os.path.join(ctx.work, f"pipe-a-q8-{os.getpid()}")
    shutil.rmtree(out, ignore_errors=True)
    ctx.run("split", "--model", model, "--stages", "0:2,2:4", "--out", out, "--dtype", "q8_0")
    with open(os.path.join(out, "manifest.json")) as f:
        check(json.load(f)["dtype"] == "Q8_0", "the manifest says Q8_0")
    workers = [ctx.worker(os.path.join(out, f"stage-{k}")) for k in range(2)]
    compare_with_single_process(ctx, os.path.join(out, "coordinator"),
                                [w.address for w in workers], "q8_0 shards",
                                single_model=model, both=("--dtype", "q8_0"))
    # A worker started on f32 weights is a different model from the q8_0 shard's stage.
    f32_worker = ctx.worker(model)
    proc = ctx.generate(os.path.join(out, "coordinator"), "--prompt-ids", "1,2", "--workers",
                        f"{f32_worker.address},{workers[1].address}", expect=1)
    check(b"wrong_model" in proc.stderr or b"different" in proc.stderr,
          f"an f32 worker is refused for a q8_0 stage: {proc.stderr!r}")
    print("ok: an f32 worker is refused where the manifest expects q8_0 weights")
    shutil.rmtree(out, ignore_errors=True)


def resident_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@case
def gpt2_124m_3_stages(ctx):
    """The bar: a GPT-2 (124M)-shaped model through 3 stages gives the single-process output."""
    model = os.path.join(ctx.work, "gpt2-124m")
    if not os.path.isfile(os.path.join(model, "model.safetensors")):
        subprocess.run(["/usr/bin/python3", MAKE_MODEL, "--preset", "gpt2", "--vocab-size", "50257",
                        "--out", model, "--seed", "11", "--linear-std", str(1.6 / 768 ** 0.5)],
                       check=True, stdout=subprocess.DEVNULL)
    workers = [ctx.worker(model) for _ in range(3)]
    ids = prompt_ids(40, vocab=50257, seed=4)
    common = ["--prompt-ids", ids, "--max-tokens", "12", "--temperature", "0", "--ignore-eos",
              "--prefill-chunk", "16"]
    single_logits = os.path.join(ctx.work, "gpt2-single.f32")
    piped_logits = os.path.join(ctx.work, "gpt2-pipeline.f32")
    single = ctx.generate(model, *common, logits=single_logits)
    piped = ctx.generate(model, *common, "--workers", ",".join(w.address for w in workers),
                         logits=piped_logits)
    check(single["generated_ids"] == piped["generated_ids"],
          f"tokens {piped['generated_ids']} != {single['generated_ids']}")
    check(same_bytes(single_logits, piped_logits), "logits are bit-identical")
    # Each worker maps only its 4 of 12 layers: its memory follows its layers, not the model.
    weights = os.path.getsize(os.path.join(model, "model.safetensors"))
    layer_bytes = (12 * 768 * 768 + 13 * 768) * 4
    for w in workers:
        rss = resident_bytes(w.proc.pid)
        print(f"ok: {w.name} resident {rss >> 20} MiB (its 4 layers: {4 * layer_bytes >> 20} MiB, "
              f"whole model: {weights >> 20} MiB)")
        check(rss < 4 * layer_bytes + (64 << 20), f"{w.name} resident {rss >> 20} MiB is more "
              "than its layers + 64 MiB")
    print(f"ok: 3-stage GPT-2 124M greedy output identical: {piped['generated_ids']}")
    for name in ("gpt2-single.f32", "gpt2-pipeline.f32"):
        os.remove(os.path.join(ctx.work, name))


@case
def sigterm_stops_cleanly(ctx):
    model = ctx.model("pipe-a")
    w = ctx.worker(model)
    ctx.generate(model, "--prompt-ids", "1,2,3", "--max-tokens", "2", "--workers", w.address)
    status = w.stop()
    check(status == 0, f"exit status {status} after SIGTERM")
    check("shutting down" in w.tail(), "the log says it shut down")
    print("ok: SIGTERM -> exit 0")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dgpt")
    parser.add_argument("--work", default="/tmp/dgpt-pipeline-test")
    parser.add_argument("--case")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    os.makedirs(args.work, exist_ok=True)
    ctx = Context(args.dgpt, args.work)
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
