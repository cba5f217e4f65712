#!/usr/bin/python3
"""A mixed cluster: an x86-64 coordinator with aarch64 workers (under qemu-user, on loopback).

Starts aarch64 `dgpt worker` processes (--dgpt-arm64: a command that runs the aarch64 binary,
e.g. build-arm64/dgpt-qemu) and runs the x86-64 `dgpt generate --workers ...` (--dgpt-x86) on a
small random model, then compares with the x86-64 single-process run:

  * greedy tokens must be equal (a mismatch at a step whose top-2 logit gap in the x86 run is
    below NEAR_TIE is reported as a near-tie, not a failure: the two architectures may break it
    differently);
  * logits (--logits-out, float32 [steps, vocab]) may differ in the last bits, because OpenBLAS
    and libm pick per-CPU kernels whose summation order / FMA use differ; their max abs diff is
    printed and must stay below LOGITS_TOLERANCE.

The aarch64 single-process run is compared the same way (the engine on aarch64 vs on x86-64,
without the network in between). Python standard library only.
Exit status: 0 all good, 1 a mismatch or an error.
"""
import argparse
import array
import json
import os
import random
import select
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_MODEL = os.path.join(ROOT, "weights", "make_random_model.py")

# The x86-64 and aarch64 builds run different OpenBLAS kernels (and libm variants), whose
# summation order and FMA use differ, so logits differ in the last bits: on the default model
# (logits of magnitude ~1) the max abs diff observed under qemu-aarch64 7.2 is ~1e-6. 1e-4, the
# engine-vs-numpy tolerance of tests/reference, still catches any real bug (a wrong layer, a
# dropped bias, a byte-order slip move logits by O(0.1..1)).
LOGITS_TOLERANCE = 1e-4
NEAR_TIE = 1e-4


def fail(message):
    print("FAIL:", message, flush=True)
    sys.exit(1)


class Worker:
    """An aarch64 `dgpt worker`; its bound port is read from --announce-fd."""

    def __init__(self, command, model, work, name):
        self.name = name
        self.log_path = os.path.join(work, f"{name}.log")
        read_fd, write_fd = os.pipe()
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*command, "worker", "--listen", "127.0.0.1:0", "--model", model, "--threads", "1",
             "--announce-fd", str(write_fd), "--name", name],
            stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(write_fd,))
        os.close(write_fd)
        ready, _, _ = select.select([read_fd], [], [], 120)  # qemu start-up is slow
        text = os.read(read_fd, 64).decode() if ready else ""
        os.close(read_fd)
        if not text.strip():
            self.proc.kill()
            self.proc.wait()
            fail(f"aarch64 worker {name} did not start: {self.tail()}")
        self.port = int(text)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def tail(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def generate(command, model, args, logits, label):
    started = time.monotonic()
    proc = subprocess.run([*command, "generate", "--model", model, "--json", "--threads", "1",
                           "--logits-out", logits, *args], capture_output=True, timeout=600)
    if proc.returncode != 0:
        fail(f"{label}: exit {proc.returncode}\nstderr: {proc.stderr.decode()[-3000:]}")
    out = json.loads(proc.stdout)
    print(f"   {label}: {time.monotonic() - started:.1f} s", flush=True)
    return out


def read_f32(path):
    values = array.array("f")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    if sys.byteorder != "little":
        values.byteswap()
    return values


def compare(reference_label, reference, reference_logits, label, other, other_logits, vocab):
    """Tokens equal (or a near-tie) and logits within LOGITS_TOLERANCE. Returns the max diff."""
    want, got = reference["generated_ids"], other["generated_ids"]
    a, b = read_f32(reference_logits), read_f32(other_logits)
    if len(a) % vocab or len(b) % vocab:
        fail(f"{label}: logits files are not [steps, {vocab}] float32")
    steps = min(len(a), len(b)) // vocab
    if want != got:
        step = next((i for i, (x, y) in enumerate(zip(want, got)) if x != y), min(len(want), len(got)))
        # Logits row of the step that chose generated token `step`: the prompt's last position
        # is row 0 when the prompt is one chunk; find it from the end instead (one row per
        # generated token, the last rows of the file).
        row = len(a) // vocab - len(want) + step
        gap = None
        if 0 <= row < len(a) // vocab:
            top = sorted(a[row * vocab:(row + 1) * vocab], reverse=True)[:2]
            gap = top[0] - top[1]
        if gap is not None and gap < NEAR_TIE:
            print(f"note: {label}: tokens differ from {reference_label} from step {step} on, where "
                  f"the top-2 logit gap is {gap:.2e} (a near-tie); compared up to there")
        else:
            fail(f"{label}: tokens {got} != {reference_label} {want} (first difference at step "
                 f"{step}, top-2 gap {gap})")
        steps = row + 1  # rows after the first different token have different contexts
    if steps == 0:
        fail(f"{label}: no logits to compare")
    n = steps * vocab
    max_diff, identical = 0.0, 0
    for x, y in zip(a[:n], b[:n]):
        d = abs(x - y)
        if d > max_diff:
            max_diff = d
        identical += x == y
    scale = max(abs(x) for x in a[:n])
    print(f"ok: {label}: {len(got)} greedy tokens equal {reference_label}; logits over {steps} "
          f"rows x {vocab}: max abs diff {max_diff:.3e} (max |logit| {scale:.2f}), "
          f"{identical}/{n} bit-identical", flush=True)
    if max_diff > LOGITS_TOLERANCE:
        fail(f"{label}: logits max abs diff {max_diff:.3e} > {LOGITS_TOLERANCE}")
    return max_diff


def make_model(work, n_layer, n_embd, n_head, n_positions, seed):
    out = os.path.join(work, f"mixed-L{n_layer}-C{n_embd}-s{seed}")
    if not os.path.isfile(os.path.join(out, "model.safetensors")):
        subprocess.run(["/usr/bin/python3", MAKE_MODEL, "--out", out, "--n-layer", str(n_layer),
                        "--n-head", str(n_head), "--n-embd", str(n_embd), "--n-positions",
                        str(n_positions), "--seed", str(seed), "--linear-std",
                        f"{1.6 / n_embd ** 0.5:.4f}"], check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "config.json")) as f:
        return out, json.load(f)["vocab_size"]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dgpt-x86", required=True, help="the x86-64 dgpt binary (the coordinator)")
    p.add_argument("--dgpt-arm64", required=True,
                   help="command running the aarch64 dgpt, e.g. build-arm64/dgpt-qemu "
                        "(shell-split, so 'qemu-aarch64 -L /usr/aarch64-linux-gnu dgpt' works)")
    p.add_argument("--work", default="/tmp/dgpt-arm64-mixed")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=24)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    x86 = [args.dgpt_x86]
    arm = shlex.split(args.dgpt_arm64)

    model, vocab = make_model(args.work, args.n_layer, args.n_embd, args.n_head, 256, seed=21)
    rng = random.Random(3)
    ids = ",".join(str(rng.randrange(min(vocab, 256))) for _ in range(29))
    common = ["--prompt-ids", ids, "--max-tokens", str(args.max_tokens), "--temperature", "0",
              "--ignore-eos", "--prefill-chunk", "8"]
    path = lambda name: os.path.join(args.work, name)
    print(f"model: {model} ({args.n_layer} layers, C={args.n_embd}, V={vocab}); "
          f"prompt 29 tokens, {args.max_tokens} greedy", flush=True)

    single = generate(x86, model, common, path("x86-single.f32"), "x86-64 single process")
    arm_single = generate(arm, model, common, path("arm64-single.f32"), "aarch64 single process")
    diffs = [compare("x86-64 single", single, path("x86-single.f32"),
                     "aarch64 single process", arm_single, path("arm64-single.f32"), vocab)]

    workers = []
    try:
        for k in range(args.workers):
            workers.append(Worker(arm, model, args.work, f"arm{k + 1}"))
        addresses = ",".join(w.address for w in workers)
        print(f"   {len(workers)} aarch64 workers at {addresses}", flush=True)
        mixed = generate(x86, model, [*common, "--workers", addresses], path("mixed.f32"),
                         f"x86-64 coordinator + {len(workers)} aarch64 workers")
        diffs.append(compare("x86-64 single", single, path("x86-single.f32"),
                             f"x86-64 coordinator + {len(workers)} aarch64 workers", mixed,
                             path("mixed.f32"), vocab))
        if any(s.get("sequences_in_use", 0) for s in mixed.get("stages", [])):
            fail(f"KV slots still in use after the request: {mixed['stages']}")
        # The coordinator computes a layer itself too: x86-64 and aarch64 layers in one chain.
        local = generate(x86, model, [*common, "--workers", ",".join(w.address for w in workers[:2]),
                                      "--local-layers", "0:1"],
                         path("mixed-local.f32"), "x86-64 coordinator (layer 0) + 2 aarch64 workers")
        diffs.append(compare("x86-64 single", single, path("x86-single.f32"),
                             "x86-64 layer 0 + 2 aarch64 workers", local,
                             path("mixed-local.f32"), vocab))
        # Same-architecture chain stays bit-identical: aarch64 workers vs aarch64 single process.
        arm_coord = generate(arm, model, [*common, "--workers", addresses], path("arm-chain.f32"),
                             "aarch64 coordinator + aarch64 workers")
        if arm_coord["generated_ids"] != arm_single["generated_ids"]:
            fail("aarch64 coordinator + workers: tokens differ from aarch64 single process")
        with open(path("arm-chain.f32"), "rb") as f1, open(path("arm64-single.f32"), "rb") as f2:
            if f1.read() != f2.read():
                fail("aarch64 chain: logits are not bit-identical to aarch64 single process")
        print("ok: aarch64 coordinator + aarch64 workers: tokens and logits bit-identical to the "
              "aarch64 single process", flush=True)
    finally:
        for w in workers:
            w.stop()
    print(f"all passed: mixed cluster (max abs logits diff x86-64 vs aarch64: {max(diffs):.3e}, "
          f"tolerance {LOGITS_TOLERANCE})")


if __name__ == "__main__":
    main()
