#!/usr/bin/python3
"""End-to-end checks of the dgpt command line as a user runs it.

Each case is one ctest test (`--case NAME`; `--list` prints them). Models are small random ones
made by weights/make_random_model.py into --work.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_MODEL = os.path.join(ROOT, "weights", "make_random_model.py")

CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


class Context:
    def __init__(self, dgpt, work, tokenizer_dir):
        self.dgpt = dgpt
        self.work = work
        self.tokenizer_dir = tokenizer_dir if tokenizer_dir and os.path.isfile(
            os.path.join(tokenizer_dir, "vocab.json")) else None

    def model(self, name="cli-tiny", extra=()):
        """A tiny random model (made once, reused)."""
        out = os.path.join(self.work, name)
        if not os.path.isfile(os.path.join(out, "model.safetensors")):
            args = [MAKE_MODEL, "--out", out, "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
                    "--n-positions", "64", "--seed", "5", *extra]
            if self.tokenizer_dir:
                args += ["--tokenizer-dir", self.tokenizer_dir]
            subprocess.run(["/usr/bin/python3", *args], check=True, stdout=subprocess.DEVNULL)
        return out

    def run(self, *args, stdin=None, expect=0):
        proc = subprocess.run([self.dgpt, *args], input=stdin, capture_output=True, timeout=120)
        if expect is not None and proc.returncode != expect:
            fail(f"dgpt {' '.join(args)}: exit {proc.returncode}, expected {expect}\n"
                 f"stdout: {proc.stdout[:2000]!r}\nstderr: {proc.stderr[:2000]!r}")
        return proc


def fail(message):
    print("FAIL:", message)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def one_line_error(proc, *needles):
    """The error contract: exit 1, exactly one line on stderr, naming what went wrong."""
    err = proc.stderr.decode("utf-8", "replace")
    check(proc.returncode == 1, f"exit status {proc.returncode}, expected 1; stderr: {err!r}")
    check(err.count("\n") == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}")
    for needle in needles:
        check(needle in err, f"expected {needle!r} in the error, got {err!r}")
    print("ok:", err.strip())


def generate_json(ctx, model, *args):
    proc = ctx.run("generate", "--model", model, "--json", "--threads", "1", *args)
    return json.loads(proc.stdout)


@case
def make_model(ctx):
    """Run first (a ctest fixture), so parallel cases never race to create the model."""
    print("ok: model at", ctx.model())


@case
def corrupt_checkpoint(ctx):
    good = ctx.model()
    for name, mutate in [
        ("truncated", lambda data: data[: len(data) // 2]),
        ("header_past_end", lambda data: (10**9).to_bytes(8, "little") + data[8:]),
        ("bad_json", lambda data: data[:8] + b"x" + data[9:]),
        ("empty", lambda data: b""),
    ]:
        bad = os.path.join(ctx.work, "corrupt-" + name)
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(good, bad)
        path = os.path.join(bad, "model.safetensors")
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(mutate(data))
        one_line_error(ctx.run("generate", "--model", bad, "--prompt", "hi", expect=None), path)
        one_line_error(ctx.run("inspect", bad, expect=None), path)


@case
def missing_model(ctx):
    missing = os.path.join(ctx.work, "no-such-model")
    one_line_error(ctx.run("generate", "--model", missing, "--prompt", "hi", expect=None),
                   "config.json")


@case
def context_overflow(ctx):
    model = ctx.model()  # 64 positions
    ids = ",".join(["5"] * 60)
    one_line_error(ctx.run("generate", "--model", model, "--prompt-ids", ids, "--max-tokens", "10",
                           expect=None), "exceeds the model's context of 64 tokens", "--truncate")
    out = generate_json(ctx, model, "--prompt-ids", ids, "--max-tokens", "10", "--truncate",
                        "--temperature", "0", "--ignore-eos")
    check(len(out["prompt_ids"]) == 55, f"truncated prompt has {len(out['prompt_ids'])} tokens")
    check(len(out["generated_ids"]) == 10, "generated 10 tokens")
    print("ok: truncation keeps the last 55 prompt tokens")


@case
def bad_arguments(ctx):
    model = ctx.model()
    one_line_error(ctx.run("generate", "--model", model, "--prompt", "x", "--top-p", "0",
                           expect=None), "top-p")
    one_line_error(ctx.run("generate", "--model", model, "--prompt-ids", "1,abc", expect=None),
                   "abc")
    one_line_error(ctx.run("generate", "--model", model, "--prompt-ids", "99999", expect=None),
                   "outside the vocabulary")


@case
def seeded_sampling_repeats(ctx):
    model = ctx.model()
    args = ("--prompt-ids", "1,2,3", "--max-tokens", "24", "--temperature", "1.0", "--ignore-eos")
    a = generate_json(ctx, model, *args, "--seed", "11")
    b = generate_json(ctx, model, *args, "--seed", "11")
    c = generate_json(ctx, model, *args, "--seed", "12")
    check(a["generated_ids"] == b["generated_ids"], "same seed, same tokens")
    check(a["generated_ids"] != c["generated_ids"], "different seeds should differ")
    check(a["seed"] == 11, "the seed is reported")
    print("ok: seed 11 twice ->", a["generated_ids"][:8], "...")


@case
def threads_do_not_change_output(ctx):
    model = ctx.model()
    args = ("--prompt-ids", "7,8,9,10", "--max-tokens", "16", "--temperature", "0", "--ignore-eos")
    one = json.loads(ctx.run("generate", "--model", model, "--json", "--threads", "1", *args).stdout)
    two = json.loads(ctx.run("generate", "--model", model, "--json", "--threads", "2", *args).stdout)
    check(one["generated_ids"] == two["generated_ids"], "1 and 2 threads give the same tokens")
    print("ok:", one["generated_ids"])


@case
def streamed_text_equals_json_text(ctx):
    model = ctx.model()
    args = ("--prompt", "Hello", "--max-tokens", "20", "--seed", "3", "--ignore-eos",
            "--threads", "1")
    streamed = ctx.run("generate", "--model", model, *args).stdout
    as_json = json.loads(ctx.run("generate", "--model", model, "--json", *args).stdout)
    check(streamed.endswith(b"\n"), "streamed output ends with a newline")
    check(streamed[:-1].decode("utf-8", "replace") == as_json["text"],
          f"streamed {streamed[:-1]!r} vs json {as_json['text']!r}")
    stderr = ctx.run("generate", "--model", model, *args).stderr.decode()
    check("tok/s" in stderr and "first token" in stderr, f"timings on stderr: {stderr!r}")
    print("ok: streamed text equals --json text")


@case
def stop_strings(ctx):
    model = ctx.model()
    base = ("--prompt", "Hello", "--max-tokens", "40", "--seed", "4", "--ignore-eos")
    full = generate_json(ctx, model, *base)["text"]
    check(len(full) > 6, f"need some text, got {full!r}")
    stop = full[3:5]
    first = full.find(stop)
    stopped = generate_json(ctx, model, *base, "--stop", stop)
    check(stopped["text"] == full[:first], f"stop {stop!r}: {stopped['text']!r} vs {full[:first]!r}")
    check(stopped["stop_reason"] == "stop", "stop_reason is stop")
    streamed = ctx.run("generate", "--model", model, *base, "--stop", stop,
                       "--threads", "1").stdout.decode("utf-8", "replace")
    check(streamed[:-1] == full[:first], f"streamed output stops before {stop!r}: {streamed!r}")
    print(f"ok: stopping at {stop!r}")


@case
def inspect_reports_sizes(ctx):
    model = ctx.model()
    out = json.loads(ctx.run("inspect", model, "--json").stdout)
    C, L, V, P = 32, 2, out["config"]["vocab_size"], 64
    per_layer = 12 * C * C + 13 * C
    check(out["parameters_per_layer"] == per_layer, f"per-layer params {out['parameters_per_layer']}")
    check(out["parameters"] == L * per_layer + V * C + P * C + 2 * C, "total parameters")
    check(out["bytes_per_layer"] == 4 * per_layer, "f32 bytes per layer")
    check(out["lm_head_tied"] is True, "tied head")
    text = ctx.run("inspect", model).stdout.decode()
    check("per layer:" in text and "parameters:" in text, text)
    print("ok:", out["parameters"], "parameters")


@case
def split_model(ctx):
    model = ctx.model()  # 2 layers
    out = os.path.join(ctx.work, "split-cli")
    shutil.rmtree(out, ignore_errors=True)
    proc = ctx.run("split", "--model", model, "--stages", "0:1,1:2", "--out", out)
    table = proc.stdout.decode()
    check("stage-0" in table and "stage-1" in table and "coordinator" in table, table)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    check(manifest["format"] == "dgpt-split-v1", f"manifest format {manifest['format']!r}")
    check([s["layers"] for s in manifest["stages"]] == [[0, 1], [1, 2]], "manifest layers")
    check(manifest["config"]["n_layer"] == 2, "manifest config")
    for entry in manifest["stages"] + [manifest["coordinator"]]:
        path = os.path.join(out, entry["dir"], "model.safetensors")
        with open(path, "rb") as f:
            data = f.read()
        check(entry["bytes"] == len(data), f"{path}: bytes {entry['bytes']} vs {len(data)}")
        check(entry["sha256"] == hashlib.sha256(data).hexdigest(), f"{path}: sha256")
    for k, entry in enumerate(manifest["stages"]):
        with open(os.path.join(out, entry["dir"], "shard.json")) as f:
            shard = json.load(f)
        check(shard["fingerprint"] == entry["fingerprint"] and len(shard["fingerprint"]) == 64,
              f"stage {k} fingerprint")
        check(shard["layers"] == [k, k + 1] and not shard["has_embeddings"], f"stage {k} shard")
        check(entry["fingerprint"][:16] in table, "the table shows a fingerprint prefix")
    check(manifest["stages"][0]["fingerprint"] != manifest["stages"][1]["fingerprint"],
          "stages have different fingerprints")

    # inspect understands shards.
    C = 32
    per_layer = 12 * C * C + 13 * C
    stage = json.loads(ctx.run("inspect", os.path.join(out, "stage-1"), "--json").stdout)
    check(stage["shard"]["layers"] == [1, 2], f"inspect shard {stage.get('shard')}")
    check(stage["parameters"] == per_layer, f"stage parameters {stage['parameters']}")
    check(stage["bytes_per_layer"] == 4 * per_layer, "stage bytes per layer")
    text = ctx.run("inspect", os.path.join(out, "stage-1")).stdout.decode()
    check("shard:        layers 1:2" in text and "per layer:" in text, text)
    coordinator = json.loads(ctx.run("inspect", os.path.join(out, "coordinator"), "--json").stdout)
    check(coordinator["shard"]["has_embeddings"] and coordinator["parameters_per_layer"] == 0,
          f"inspect coordinator {coordinator}")

    # A stage shard cannot generate on its own; the error says what it holds.
    one_line_error(ctx.run("generate", "--model", os.path.join(out, "stage-1"), "--prompt", "hi",
                           expect=None), "holds layers 1:2 but layers 0:2 were requested")

    half = os.path.join(ctx.work, "split-cli-f16")
    shutil.rmtree(half, ignore_errors=True)
    ctx.run("split", "--model", model, "--stages", "auto:2", "--out", half, "--dtype", "f16")
    with open(os.path.join(half, "manifest.json")) as f:
        half_manifest = json.load(f)
    check([s["layers"] for s in half_manifest["stages"]] == [[0, 1], [1, 2]], "auto:2 layers")
    check(half_manifest["stages"][0]["fingerprint"] != manifest["stages"][0]["fingerprint"],
          "f16 and f32 shards have different fingerprints")
    half_stage = json.loads(ctx.run("inspect", os.path.join(half, "stage-0"), "--json").stdout)
    check(half_stage["dtype"] == "F16", f"f16 shard dtype {half_stage['dtype']}")

    bad = os.path.join(ctx.work, "split-cli-bad")
    one_line_error(ctx.run("split", "--model", model, "--stages", "0:1", "--out", bad,
                           expect=None), "--stages 0:1 leaves layer 1 uncovered")
    one_line_error(ctx.run("split", "--model", model, "--stages", "0:2,1:2", "--out", bad,
                           expect=None), "layer 1 to more than one stage")
    one_line_error(ctx.run("split", "--model", model, "--stages", "zero:1", "--out", bad,
                           expect=None), "is not BEGIN:END")
    one_line_error(ctx.run("split", "--model", model, "--stages", "auto:2", "--out", bad,
                           "--dtype", "f8", expect=None), "--dtype")
    one_line_error(ctx.run("split", "--model", os.path.join(out, "stage-0"), "--stages", "0:2",
                           "--out", bad, expect=None), "already a shard")
    check(not os.path.exists(bad), "nothing written on a bad split")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dgpt")
    parser.add_argument("--work", default="/tmp/dgpt-cli-test")
    parser.add_argument("--tokenizer-dir")
    parser.add_argument("--case")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    os.makedirs(args.work, exist_ok=True)
    ctx = Context(args.dgpt, args.work, args.tokenizer_dir)
    names = [args.case] if args.case else list(CASES)
    for name in names:
        print(f"== {name}")
        CASES[name](ctx)
    print("all passed:", ", ".join(names))


if __name__ == "__main__":
    main()
