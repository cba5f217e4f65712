#!/usr/bin/python3
"""End-to-end checks of `dgpt bench` on a tiny random model: in one process and through
--local-workers, JSON, text, SVG, --membw, and the one-line errors.

Each case is one ctest test (`--case NAME`; `--list` prints them). Timing figures are only
checked for sanity (positive, consistent with each other), never against expectations.
"""
import argparse
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_MODEL = os.path.join(ROOT, "weights", "make_random_model.py")
N_LAYER, N_EMBD, N_POSITIONS = 3, 64, 64
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


class Context:
    def __init__(self, dgpt, work):
        self.dgpt = dgpt
        self.work = work

    def model(self):
        """A tiny random model (made once by the make_model fixture, reused)."""
        out = os.path.join(self.work, "bench-tiny")
        if not os.path.isfile(os.path.join(out, "model.safetensors")):
            subprocess.run(["/usr/bin/python3", MAKE_MODEL, "--out", out, "--n-layer",
                            str(N_LAYER), "--n-head", "2", "--n-embd", str(N_EMBD), "--n-positions",
                            str(N_POSITIONS), "--seed", "9"], check=True, stdout=subprocess.DEVNULL)
        return out

    def run(self, *args, expect=0):
        proc = subprocess.run([self.dgpt, "bench", *args], capture_output=True, timeout=240)
        if expect is not None and proc.returncode != expect:
            fail(f"dgpt bench {' '.join(args)}: exit {proc.returncode}, expected {expect}\n"
                 f"stdout: {proc.stdout[:3000]!r}\nstderr: {proc.stderr[:3000]!r}")
        return proc

    def bench_json(self, *args):
        proc = self.run("--model", self.model(), "--json", *args)
        try:
            return json.loads(proc.stdout)
        except ValueError as e:
            fail(f"--json output is not JSON ({e}): {proc.stdout[:2000]!r}")


def one_line_error(proc, *needles):
    """The error contract: exit 1, exactly one line on stderr, naming what went wrong."""
    err = proc.stderr.decode("utf-8", "replace")
    check(proc.returncode == 1, f"exit status {proc.returncode}, expected 1; stderr: {err!r}")
    check(err.count("\n") == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}")
    check(err.startswith("dgpt bench: "), f"the error should name the command: {err!r}")
    for needle in needles:
        check(needle in err, f"expected {needle!r} in the error, got {err!r}")
    print("ok:", err.strip())


def positive(value, what):
    check(isinstance(value, (int, float)) and value > 0, f"{what} = {value!r}, expected > 0")


def check_report(out, P, G, C, kinds):
    """What every report must satisfy, whatever the timings."""
    check([s["kind"] for s in out["stages"]] == kinds,
          f"stages {[s['kind'] for s in out['stages']]}, expected {kinds}")
    w = out["workload"]
    check((w["prompt_tokens"], w["generated_tokens"], w["concurrency"]) == (P, G, C),
          f"workload {w}")
    e = out["end_to_end"]
    check(e["generated_tokens"] == G * C, f"generated {e['generated_tokens']}, expected {G * C}")
    check(e["decode_tokens"] == (G - 1) * C, f"decode tokens {e['decode_tokens']}")
    check(e["prompt_tokens"] == P * C, f"prompt tokens {e['prompt_tokens']}")
    for key in ("ttft_ms", "ttft_max_ms", "prefill_tokens_per_second", "decode_tokens_per_second"):
        positive(e[key], key)
    lat = e["per_token_latency_ms"]
    for key in ("mean", "p50", "p95", "p99"):
        positive(lat[key], f"latency {key}")
    check(lat["p50"] <= lat["p95"] <= lat["p99"], f"percentiles out of order: {lat}")
    check(e["ttft_ms"] <= e["ttft_max_ms"] + 1e-9, "mean TTFT above the slowest")

    layers = []
    for s in out["stages"]:
        name = s["name"]
        for key in ("prefill_ms_per_token", "decode_ms_per_token", "decode_ms_per_step",
                    "weight_bytes_per_step", "bandwidth_gbs"):
            positive(s[key], f"{name} {key}")
        check(s["weight_format"] in ("f32", "f16", "q8_0"), f"{name} format {s['weight_format']}")
        if s["kind"] == "coordinator":
            check(s["layers"] is None, "the coordinator runs no blocks")
            for key in ("embed_ms", "lm_head_ms", "sampling_ms"):
                check(s[key] >= 0, f"coordinator {key} = {s[key]}")
        else:
            layers.append(tuple(s["layers"]))
        if s["batch"] is not None:
            check(1 <= s["batch"] <= C + 1e-9, f"{name} batch {s['batch']} outside 1..{C}")
            positive(s["achieved_gbs"], f"{name} achieved_gbs")
            pct = s["roofline_percent"]
            check(0 < pct < 1000, f"{name} roofline {pct}% is not plausible")
            check(abs(pct - 100 * s["achieved_gbs"] / s["bandwidth_gbs"]) < 1e-6 * pct,
                  f"{name}: roofline % is not achieved / bandwidth")
            check(abs(s["weight_bytes_per_token"] * s["batch"] - s["weight_bytes_per_step"])
                  < 1e-6 * s["weight_bytes_per_step"], f"{name}: bytes per token x batch")
    # The blocks are covered once, in order.
    check(layers[0][0] == 0 and layers[-1][1] == N_LAYER and
          all(a[1] == b[0] for a, b in zip(layers, layers[1:])), f"layer ranges {layers}")

    # A token's time contains every stage's compute for it: the sum of the per-stage figures
    # cannot exceed the measured per-token latency (small slack for clock reads).
    breakdown = out["decode_breakdown_ms"]
    check(all(part["ms"] >= 0 for part in breakdown), f"negative breakdown part: {breakdown}")
    total = sum(part["ms"] for part in breakdown)
    check(abs(total - lat["mean"]) <= 0.02 * lat["mean"] + 0.01,
          f"breakdown sums to {total} ms, mean latency is {lat['mean']} ms")
    stage_sum = sum(s["decode_ms_per_step"] for s in out["stages"])
    check(stage_sum <= lat["mean"] * 1.02 + 0.01,
          f"per-stage decode times sum to {stage_sum} ms > per-token latency {lat['mean']} ms")
    if C == 1:
        for s in out["stages"]:
            check(s["decode_ms_per_token"] <= lat["mean"] * 1.02 + 0.01,
                  f"{s['name']} decode {s['decode_ms_per_token']} ms above the latency")
    print(f"ok: {len(out['stages'])} stages, {e['decode_tokens_per_second']:.0f} tok/s, "
          f"p50 {lat['p50']:.3f} ms, breakdown {total:.3f} ms")


@case
def make_model(ctx):
    """Run first (a ctest fixture), so parallel cases never race to create the model."""
    print("ok: model at", ctx.model())


@case
def local_json(ctx):
    out = ctx.bench_json("--prompt-tokens", "12", "--gen-tokens", "9", "--threads", "1")
    check(out["mode"] == "local" and out["hops"] is None, "one process: no hops")
    check_report(out, 12, 9, 1, ["coordinator", "local"])
    local = out["stages"][1]
    check(local["layers"] == [0, N_LAYER] and local["queue_ms"] is None, f"local stage {local}")
    measured = out["bandwidth"]["measured"]
    check(out["bandwidth"]["source"] == "measured" and measured and
          all(m["gbs"] > 0 for m in measured), f"bandwidth {out['bandwidth']}")


@case
def local_workers_json(ctx):
    out = ctx.bench_json("--prompt-tokens", "10", "--gen-tokens", "8", "--local-workers", "3",
                         "--threads", "2")
    check(out["mode"] == "pipeline", "mode")
    check_report(out, 10, 8, 1, ["coordinator", "worker", "worker", "worker"])
    hops = out["hops"]
    check(hops["count"] == 4, f"3 workers make 4 hops: {hops}")
    check(abs(hops["per_hop_ms"] * 4 - hops["total_ms"]) < 1e-9 + 1e-9 * hops["total_ms"],
          "per-hop time is the total over the hops")
    for s in out["stages"]:
        check(s["hop_ms"] == hops["per_hop_ms"], f"{s['name']} hop_ms")
        if s["kind"] == "worker":
            check(s["queue_ms"] is not None and s["queue_ms"] >= 0, f"{s['name']} queue")
            check(s["address"].startswith("127.0.0.1:"), f"{s['name']} address")
            check(s["batch"] == 1, f"one sequence, batch {s['batch']}")
            # Memory from the worker's STATS: its packed matrices are its one layer's four
            # (12 C^2 f32 weights), its KV cache one sequence's, both inside its RSS.
            check(s["matrix_bytes"] == 12 * N_EMBD * N_EMBD * 4,
                  f"{s['name']} matrix bytes {s['matrix_bytes']}")
            check(s["kv_cache_bytes"] > 0 and
                  s["resident_bytes"] > s["matrix_bytes"] + s["kv_cache_bytes"],
                  f"{s['name']} memory {s['resident_bytes']}, {s['kv_cache_bytes']}")
    labels = [part["label"] for part in out["decode_breakdown_ms"]]
    for needle in ("stage 1 compute", "stage 2 compute", "stage 3 compute", "queue", "hops x4",
                   "LM head"):
        check(any(needle in label for label in labels), f"no {needle!r} in {labels}")


@case
def local_layers_and_given_bandwidth(ctx):
    out = ctx.bench_json("-P", "6", "-G", "5", "--local-workers", "2", "--local-layers", "0:1",
                         "--membw-gbs", "12.5")
    check_report(out, 6, 5, 1, ["coordinator", "local", "worker", "worker"])
    check(out["bandwidth"] == {"source": "--membw-gbs", "gbs": 12.5}, f"{out['bandwidth']}")
    check(all(s["bandwidth_gbs"] == 12.5 for s in out["stages"]), "the given bandwidth is used")
    check(out["hops"]["count"] == 3, "local prefix + 2 workers: 3 hops")


@case
def concurrent_sequences(ctx):
    out = ctx.bench_json("-P", "8", "-G", "6", "-C", "3", "--local-workers", "2")
    check_report(out, 8, 6, 3, ["coordinator", "worker", "worker"])
    check(out["stages"][0]["batch"] is None and out["stages"][0]["roofline_percent"] is None,
          "a shared LM head's batches are unknown")


@case
def text_output(ctx):
    proc = ctx.run("--model", ctx.model(), "-P", "8", "-G", "4", "--local-workers", "2")
    text = proc.stdout.decode()
    for needle in ("stage", "prefill ms/tok", "decode ms/tok", "queue ms", "hop ms",
                   "weight MB/tok", "GB/s", "roofline %", "coordinator", "stage 1", "stage 2",
                   "time to first token:", "decode:", "tokens/s", "p50", "p95", "p99",
                   "3 hops"):
        check(needle in text, f"no {needle!r} in the text output:\n{text}")
    print("ok: text output\n" + text)


@case
def svg_chart(ctx):
    for extra in ((), ("--local-workers", "3")):
        path = os.path.join(ctx.work, f"bench-{len(extra)}.svg")
        if os.path.exists(path):
            os.remove(path)
        out = ctx.bench_json("-P", "8", "-G", "5", "--svg", path, *extra)
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            fail(f"{path} is not XML: {e}")
        check(root.tag == "{http://www.w3.org/2000/svg}svg", f"root element {root.tag}")
        rects = root.iter("{http://www.w3.org/2000/svg}rect")
        segments = [r for r in rects if r.get("class") == "segment"]
        parts = out["decode_breakdown_ms"]
        check(len(segments) == len(parts),
              f"{len(segments)} segment rects for {len(parts)} breakdown parts")
        for rect, part in zip(segments, parts):
            check(float(rect.get("width")) >= 0, "negative width")
            title = rect.find("{http://www.w3.org/2000/svg}title").text
            check(title.startswith(part["label"]), f"segment {title!r} for part {part['label']!r}")
        print(f"ok: {path}: {len(segments)} segments")


@case
def membw(ctx):
    proc = ctx.run("--membw", "--threads", "2", "--membw-mib", "64")
    text = proc.stdout.decode()
    check("1 thread" in text and "2 threads" in text, f"--membw output:\n{text}")
    for line in text.splitlines():
        if "GB/s" in line and "thread" in line:
            positive(float(line.split()[-2]), line)
    sgemm = [line for line in text.splitlines() if line.startswith("sgemm ")]
    check(len(sgemm) == 2 and all(line.endswith("GFLOP/s") for line in sgemm),
          f"two sgemm peaks in the --membw output:\n{text}")
    for line in sgemm:
        positive(float(line.split()[-2]), line)
    out = json.loads(ctx.run("--membw", "--json", "--membw-mib", "64").stdout)
    check([(p["m"], p["n"], p["k"]) for p in out["sgemm"]] == [(128, 3072, 768), (1024, 1024, 1024)],
          f"sgemm shapes {out['sgemm']}")
    for peak in out["sgemm"]:
        positive(peak["gflops"], f"sgemm {peak}")
    check(out["buffer_bytes"] == 64 << 20, f"buffer {out['buffer_bytes']}")
    check(out["measured"][0]["threads"] == 1, "1 thread first")
    for m in out["measured"]:
        positive(m["gbs"], f"{m['threads']} threads GB/s")
    print("ok:", text.strip().replace("\n", " | "))


@case
def bad_inputs(ctx):
    model = ctx.model()
    one_line_error(ctx.run("--model", model, "--prompt-tokens", "0", expect=None),
                   "--prompt-tokens")
    one_line_error(ctx.run("--model", model, "--gen-tokens", "1", expect=None), "--gen-tokens")
    one_line_error(ctx.run("--model", model, "-P", "60", "-G", "10", expect=None),
                   f"context is {N_POSITIONS}")
    one_line_error(ctx.run("--model", model, "-P", "4", "-G", "3", "-C", "0", expect=None),
                   "--concurrency")
    one_line_error(ctx.run("--model", model, "-P", "4", "-G", "3", "--membw-gbs", "-1",
                           expect=None), "--membw-gbs")
    one_line_error(ctx.run("--model", model, "-P", "4", "-G", "3", "--dtype", "q9", expect=None),
                   "--dtype")
    one_line_error(ctx.run("-P", "4", expect=None), "--model")
    one_line_error(ctx.run("--model", os.path.join(ctx.work, "no-such-model"), expect=None),
                   "config.json")
    # Port 1 on loopback: nothing listens there.
    one_line_error(ctx.run("--model", model, "-P", "4", "-G", "3", "--workers", "127.0.0.1:1",
                           "--timeout", "10", expect=None), "127.0.0.1:1")
    one_line_error(ctx.run("--model", model, "-P", "4", "-G", "3", "--svg",
                           os.path.join(ctx.work, "no-such-dir", "x.svg"), expect=None),
                   "x.svg")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dgpt", help="path to the dgpt binary")
    parser.add_argument("--work", default="/tmp/dgpt-bench-tests", help="folder for models")
    parser.add_argument("--case", help="the case to run")
    parser.add_argument("--list", action="store_true", help="print the case names")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    if args.case not in CASES:
        parser.error(f"--case must be one of {', '.join(CASES)}")
    if args.case != "make_model" and not args.dgpt:
        parser.error("--dgpt is required")
    os.makedirs(args.work, exist_ok=True)
    CASES[args.case](Context(args.dgpt, args.work))


if __name__ == "__main__":
    main()
