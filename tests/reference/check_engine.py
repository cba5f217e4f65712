#!/usr/bin/python3
"""Compares the C++ engine with the numpy reference (gpt2_numpy.py) on random-weight models.

For one case (--shape NAME) it:
  1. writes the case's random model with weights/make_random_model.py into --work/NAME
     (reused when the stamp file says it was made with the same arguments and generator),
  2. picks prompt ids from an rng seeded by the case name,
  3. runs `dump_logits` in prefill, decode and split:K modes and compares each [T, V] logits
     dump with the reference's float64 logits (max abs diff <= 1e-4),
  4. runs `dgpt generate --temperature 0` and compares the generated ids with the reference's
     greedy tokens; a mismatch reports the step and the reference's top-2 logit gap there.
Exit status: 0 all good, 1 a mismatch or an error (with a one-line reason).

Shape letters: T = tokens, V = vocab size.
"""

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # ctest runs this from the source tree: leave no __pycache__
sys.path.insert(0, HERE)
import gpt2_numpy  # noqa: E402

GENERATOR = os.path.join(HERE, "..", "..", "weights", "make_random_model.py")
STAMP_NAME = "dgpt_random_model.json"

# f32 engine vs float64 reference, logits of magnitude ~1. Stored f16/bf16 values are read
# exactly by both sides, so the same tolerance holds for them.
LOGITS_TOLERANCE = 1e-4
# q8_0 also rounds every linear layer's input through q8_0, which the reference does too: the
# two agree to ~1e-7 except where an activation sits on a rounding boundary and the engine's
# float32 and the reference's float64 round it to neighbouring steps, which moves logits by
# ~1e-3. Not quantizing the weights or inputs at all in the reference is off by ~3e-2.
Q8_TOLERANCE = 5e-3
# A greedy step whose reference top-2 gap is below this is a near-tie the engine may break
# either way; it is reported and the comparison stops there instead of failing.
NEAR_TIE = 1e-4
COMMAND_TIMEOUT_S = 300


def linear_std(n_embd):
    """Conv1D weight spread for the test models: large enough that attention is peaked and
    greedy output depends on context (see make_random_model.py), scaled by 1/sqrt(width)."""
    return f"{1.6 / math.sqrt(n_embd):.4f}"


def shape_args(n_layer, n_head, n_embd, n_positions):
    return ["--n-layer", str(n_layer), "--n-head", str(n_head), "--n-embd", str(n_embd),
            "--n-positions", str(n_positions), "--linear-std", linear_std(n_embd)]


@dataclass
class Case:
    name: str
    make_args: list       # arguments for make_random_model.py (besides --out, --tokenizer-dir)
    what: str             # what the case covers, printed first
    prompt_len: int = 20
    n_generate: int = 16
    splits: tuple = ()    # K values for --mode split:K; empty = prompt_len // 2
    real_tokenizer: bool = False  # use --tokenizer-dir's GPT-2 vocab when it is there
    engine_dtype: str = None      # the engine computes in this format (--dtype); the reference
                                  # rounds its weights the same way (gpt2_numpy.with_weight_format)
    tolerance: float = LOGITS_TOLERANCE


CASES = [
    Case("tiny", shape_args(1, 1, 32, 64) + ["--seed", "1"],
         "1 layer, 1 head, C=32, byte vocab 257"),
    Case("small", shape_args(2, 2, 64, 128) + ["--seed", "2"],
         "2 layers, 2 heads, C=64"),
    Case("odd_width", shape_args(2, 3, 72, 96) + ["--seed", "3"],
         "3 heads of size 24, C=72 (widths that are not powers of two)", prompt_len=13),
    Case("no_prefix_long", shape_args(3, 4, 96, 128)
         + ["--seed", "4", "--no-prefix", "--with-attn-bias", "--with-lm-head"],
         "3 layers, 4 heads, C=96, names without transformer., attn.bias buffers, explicit "
         "lm_head, 80-token prompt", prompt_len=80, splits=(1, 40, 79)),
    Case("f16", shape_args(2, 2, 64, 128) + ["--seed", "5", "--dtype", "f16"],
         "2 layers, 2 heads, C=64, weights stored as F16"),
    Case("bf16", shape_args(2, 2, 64, 128) + ["--seed", "6", "--dtype", "bf16"],
         "2 layers, 2 heads, C=64, weights stored as BF16"),
    Case("as_f16", shape_args(2, 2, 64, 128) + ["--seed", "8"],
         "2 layers, 2 heads, C=64, F32 weights computed as f16 (--dtype f16)",
         engine_dtype="f16"),
    Case("as_q8_0", shape_args(2, 2, 64, 128) + ["--seed", "9"],
         "2 layers, 2 heads, C=64, F32 weights computed as q8_0 (--dtype q8_0)",
         engine_dtype="q8_0", tolerance=Q8_TOLERANCE),
    Case("gpt2_124m", ["--preset", "gpt2", "--linear-std", linear_std(768), "--seed", "7",
                       "--no-prefix", "--with-attn-bias"],
         "GPT-2 124M shape (12 layers, 12 heads, C=768, V=50257), laid out like the hub's "
         "gpt2 model.safetensors (no prefix, attn.bias buffers)",
         prompt_len=8, n_generate=8, real_tokenizer=True),
]
CASES_BY_NAME = {case.name: case for case in CASES}


class CheckFailed(Exception):
    """A mismatch or an error; the message is the one-line reason."""


# ----------------------------------------------------------------------------
# the model

def generator_digest():
    with open(GENERATOR, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tokenizer_args(case, tokenizer_dir):
    """--tokenizer-dir for cases that want the real vocab, if it is there; else the byte one."""
    if not case.real_tokenizer:
        return []
    if tokenizer_dir and all(os.path.isfile(os.path.join(tokenizer_dir, f))
                             for f in ("vocab.json", "merges.txt")):
        return ["--tokenizer-dir", os.path.abspath(tokenizer_dir)]
    print(f"note: no GPT-2 tokenizer at {tokenizer_dir or '(none given)'}: using the byte-level "
          "tokenizer with vocab_size 50257 (ids are compared, not text)")
    return []


def ensure_model(case, work_dir, tokenizer_dir):
    """Writes the case's random model into work_dir/<case> unless an identical one is there."""
    model_dir = os.path.join(work_dir, case.name)
    args = case.make_args + tokenizer_args(case, tokenizer_dir)
    stamp = {"args": args, "generator_sha256": generator_digest()}
    stamp_path = os.path.join(model_dir, STAMP_NAME)
    try:
        with open(stamp_path, encoding="utf-8") as f:
            if json.load(f) == stamp:
                print(f"model: reusing {model_dir}")
                return model_dir
    except (OSError, ValueError):
        pass
    shutil.rmtree(model_dir, ignore_errors=True)
    started = time.monotonic()
    run([sys.executable, GENERATOR, "--out", model_dir, *args], "make_random_model.py")
    with open(stamp_path, "w", encoding="utf-8") as f:
        json.dump(stamp, f)  # written last: a crash mid-way leaves no stamp, so no reuse
    print(f"model: made in {time.monotonic() - started:.1f} s")
    return model_dir


def prompt_ids(case, vocab_size):
    """Deterministic prompt ids for the case (the rng is seeded by the case name)."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    return rng.integers(0, vocab_size, size=case.prompt_len).tolist()


# ----------------------------------------------------------------------------
# running the engine

def run(cmd, what):
    """Runs cmd and returns its stdout; a failure raises CheckFailed with stderr's tail."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what} timed out after {COMMAND_TIMEOUT_S} s: {shlex.join(cmd)}")
    if done.stdout and what == "make_random_model.py":
        print(done.stdout.strip())
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        raise CheckFailed(f"{what} exited with {done.returncode}: {shlex.join(cmd)}\n  stderr: {tail}")
    return done.stdout


def require_binary(path, target):
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise CheckFailed(f"{target} binary not found or not executable at {path!r} "
                          f"(build the `{target}` target first)")


def dump_logits(dump_bin, model_dir, ids, mode, vocab_size, scratch, dtype=None):
    """The engine's logits [T, V] (float32) for ids in the given --mode."""
    out = os.path.join(scratch, mode.replace(":", "_") + ".f32")
    cmd = [dump_bin, "--model", model_dir, "--ids", ",".join(map(str, ids)), "--mode", mode,
           "--out", out] + (["--dtype", dtype] if dtype else [])
    run(cmd, f"dump_logits --mode {mode}")
    expected = len(ids) * vocab_size * 4
    if not os.path.exists(out):
        raise CheckFailed(f"dump_logits --mode {mode} exited 0 but wrote no {out}")
    size = os.path.getsize(out)
    if size != expected:
        raise CheckFailed(f"dump_logits --mode {mode} wrote {size} bytes to {out}, expected "
                          f"{expected} (float32 [T={len(ids)}, V={vocab_size}])")
    return np.fromfile(out, dtype="<f4").reshape(len(ids), vocab_size)


def generate_ids(dgpt_bin, model_dir, ids, n, dtype=None):
    """The engine's greedy continuation of ids, from `dgpt generate --json`."""
    cmd = [dgpt_bin, "generate", "--model", model_dir, "--prompt-ids", ",".join(map(str, ids)),
           "--max-tokens", str(n), "--temperature", "0", "--ignore-eos", "--json", "--threads", "1"]
    cmd += ["--dtype", dtype] if dtype else []
    stdout = run(cmd, "dgpt generate")
    try:
        result = json.loads(stdout)
        generated = [int(t) for t in result["generated_ids"]]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckFailed(f"dgpt generate --json printed no JSON object with generated_ids "
                          f"({e}): {stdout[:300]!r}")
    if "prompt_ids" in result and list(result["prompt_ids"]) != list(ids):
        raise CheckFailed(f"dgpt generate echoed prompt_ids {result['prompt_ids']} for {ids}")
    return generated


# ----------------------------------------------------------------------------
# comparing

def compare_logits(label, got, want, tolerance=LOGITS_TOLERANCE):
    """llm.c check_tensor style: max abs diff and where; the first offenders on failure.

    got: engine float32 [T, V]; want: reference float64 [T, V]."""
    diff = np.abs(got.astype(np.float64) - want)              # [T, V]
    diff[~np.isfinite(got)] = np.inf                          # NaN/inf from the engine fail
    t, v = np.unravel_index(int(np.argmax(diff)), diff.shape)
    max_diff = float(diff[t, v])
    where = f"position {t}, token {v}"
    ok = max_diff <= tolerance
    print(f"{'ok  ' if ok else 'FAIL'} {label}: max abs diff {max_diff:.3g} at {where} "
          f"(tolerance {tolerance:g}, {diff.size} logits)")
    if not ok:
        bad = np.argwhere(diff > tolerance)
        print(f"     {len(bad)} logits over tolerance; first ones (position, token: engine vs reference):")
        for bt, bv in bad[:5]:
            print(f"     {bt}, {bv}: "
                  f"{got[bt, bv]:.7g} vs {want[bt, bv]:.7g}")
    return ok, max_diff


def compare_greedy(engine_ids, reference_ids, reference_logits, near_tie=NEAR_TIE):
    """Token-by-token comparison; a near-tie (gap < near_tie) ends the comparison without failing."""
    for step, (got, want) in enumerate(zip(engine_ids, reference_ids)):
        if got == want:
            continue
        logits = reference_logits[step]                       # [V]
        gap = gpt2_numpy.top2_gap(logits)
        detail = (f"step {step}: engine chose {got}, reference {want}; reference top-2 gap "
                  f"{gap:.3g} (logit of {want} = {logits[want]:.7g}, of {got} = {logits[got]:.7g})")
        if logits[want] - logits[got] < near_tie:  # so the top-2 gap is below it too
            print(f"note greedy: near-tie, not a failure; compared {step} tokens. {detail}")
            return True
        print(f"FAIL greedy: {detail}")
        print(f"     engine:    {engine_ids}\n     reference: {reference_ids}")
        return False
    if len(engine_ids) != len(reference_ids):
        print(f"FAIL greedy: engine generated {len(engine_ids)} tokens, expected {len(reference_ids)} "
              f"(--ignore-eos was passed)\n     engine:    {engine_ids}\n     reference: {reference_ids}")
        return False
    smallest = min(gpt2_numpy.top2_gap(l) for l in reference_logits)
    print(f"ok   greedy: {len(engine_ids)} tokens identical {engine_ids} "
          f"({len(set(reference_ids))} distinct; smallest reference top-2 gap {smallest:.3g})")
    return True


# ----------------------------------------------------------------------------
# one case

def run_case(case, args):
    print(f"=== reference_{case.name}: {case.what}")
    require_binary(args.dump_logits, "dump_logits")
    require_binary(args.dgpt, "dgpt")
    os.makedirs(args.work, exist_ok=True)
    model_dir = ensure_model(case, args.work, args.tokenizer_dir)

    started = time.monotonic()
    model = gpt2_numpy.with_weight_format(gpt2_numpy.load(model_dir), case.engine_dtype)
    vocab_size = model["wte"].shape[0]
    ids = prompt_ids(case, vocab_size)
    want = gpt2_numpy.forward(model, ids)                     # [T, V] float64
    step_logits = []
    want_generated = gpt2_numpy.greedy(model, ids, case.n_generate, step_logits)
    print(f"reference: {len(ids)} prompt ids {ids[:10]}{' ...' if len(ids) > 10 else ''}, "
          f"{case.n_generate} greedy tokens, numpy float64 in {time.monotonic() - started:.1f} s")

    results = []
    with tempfile.TemporaryDirectory(prefix=f"{case.name}_", dir=args.work) as scratch:
        splits = case.splits or (len(ids) // 2,)
        for mode in ["prefill", "decode"] + [f"split:{k}" for k in splits]:
            got = dump_logits(args.dump_logits, model_dir, ids, mode, vocab_size, scratch,
                              case.engine_dtype)
            results.append(compare_logits(f"{mode:<9} logits [T={len(ids)}, V={vocab_size}]",
                                          got, want, case.tolerance)[0])
    generated = generate_ids(args.dgpt, model_dir, ids, case.n_generate, case.engine_dtype)
    results.append(compare_greedy(generated, want_generated, step_logits,
                                  max(NEAR_TIE, 2 * case.tolerance)))

    if not all(results):
        raise CheckFailed(f"the engine disagrees with the numpy reference on {model_dir}")
    print(f"=== reference_{case.name}: all good")


# ----------------------------------------------------------------------------
# command line

def parse_args(argv):
    p = argparse.ArgumentParser(description="Compare the C++ engine with the numpy GPT-2 reference.")
    p.add_argument("--dgpt", help="the dgpt binary")
    p.add_argument("--dump-logits", help="the dump_logits test tool")
    p.add_argument("--work", help="scratch folder for the generated models")
    p.add_argument("--shape", action="append", default=[],
                   help="case to run (repeatable; 'all' for every case); see --list")
    p.add_argument("--tokenizer-dir", help="GPT-2 vocab.json + merges.txt for the gpt2_124m case "
                                           "(optional: the byte-level tokenizer is used without it)")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--expect-cases", metavar="A;B;...",
                   help="exit 1 unless the case list is exactly this (keeps CMake in sync)")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    names = [case.name for case in CASES]
    if args.list:
        print("\n".join(names))
        return 0
    if args.expect_cases is not None:
        expected = [n for n in args.expect_cases.split(";") if n]
        if expected != names:
            print(f"error: CMake registers {expected} but check_engine.py has {names}: "
                  "update the list in tests/reference/CMakeLists.txt")
            return 1
        print(f"ok: CMake's case list matches check_engine.py ({len(names)} cases)")
        return 0
    if not args.shape or not args.work:
        print("error: --shape and --work are required (see --help; --list prints the cases)")
        return 1
    selected = names if "all" in args.shape else args.shape
    unknown = [n for n in selected if n not in CASES_BY_NAME]
    if unknown:
        print(f"error: unknown case(s) {unknown}; cases: {', '.join(names)}")
        return 1

    failed = []
    for name in selected:
        started = time.monotonic()
        try:
            run_case(CASES_BY_NAME[name], args)
        except CheckFailed as e:
            print(f"error: reference_{name}: {e}")
            failed.append(name)
        print(f"({name}: {time.monotonic() - started:.1f} s)")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
