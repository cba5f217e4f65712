#!/usr/bin/python3
"""Checks `dgpt perplexity` against the numpy GPT-2 reference (gpt2_numpy.py, float64).

For each case (--case NAME; --list prints them) it:
  1. makes a small random model (n_positions 32) with weights/make_random_model.py in --work,
     with the real GPT-2 tokenizer from --tokenizer-dir when it is there (else the byte-level
     one), and a sharpened final LayerNorm so the predictions depend clearly on the context,
  2. writes a text file, gets its token ids with `dgpt tokenize`,
  3. computes the mean negative log-likelihood with the reference, window by window exactly as
     Hugging Face's "perplexity of fixed-length models" loop does (labels of the tokens already
     scored masked out, logits shifted by one), and compares it with `dgpt perplexity --json`
     (relative 1e-5) along with the token counts.
The `errors` case checks the one-line errors (exit 1) of bad input.
"""

import argparse
import fcntl
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # ctest runs this from the source tree: leave no __pycache__
sys.path.insert(0, HERE)
import gpt2_numpy  # noqa: E402

GENERATOR = os.path.join(HERE, "..", "..", "weights", "make_random_model.py")
STAMP_NAME = "dgpt_random_model.json"
N_POSITIONS = 32
# Model args (besides --out / --tokenizer-dir). The Conv1D spread of check_engine.py's models
# (1.6 / sqrt(C)) makes attention peaked, so a token's NLL depends on which tokens it sees.
MODEL_ARGS = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--n-positions",
              str(N_POSITIONS), "--seed", "17", "--linear-std", f"{1.6 / math.sqrt(32):.4f}"]
# Random embeddings (std 0.02) give logits of spread ~0.1: every token's NLL is ~log V and a
# wrong window rule would move the mean by only ~1e-4. Scaling ln_f.weight spreads the logits
# to ~2, so the rule shows clearly (the sensitivity check below makes sure of it).
LN_F_SCALE = 16.0
# f32 engine vs float64 reference; a window rule that is off by one token moves the mean far
# more (at least SENSITIVITY_MARGIN times this, checked).
NLL_TOLERANCE = 1e-5
SENSITIVITY_MARGIN = 20
COMMAND_TIMEOUT_S = 300

# Deterministic English-like text: sentences drawn from a fixed word list.
WORDS = ("the model reads a long text and predicts every next token from the tokens before it "
         "while windows slide along with a stride so each token keeps some context river stone "
         "winter garden seven quickly under over because perhaps").split()


def make_text(n_words, seed):
    rng = np.random.default_rng(seed)
    sentences, count = [], 0
    while count < n_words:
        k = int(rng.integers(4, 12))
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=k)]
        sentences.append(" ".join(words).capitalize() + ".")
        count += k
    return " ".join(sentences) + "\n"


class CheckFailed(Exception):
    """A mismatch or an error; the message is the one-line reason."""


def run(cmd, what, stdin=None):
    """stdout of cmd; a non-zero exit raises CheckFailed with stderr's tail."""
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"{what} timed out after {COMMAND_TIMEOUT_S} s")
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        raise CheckFailed(f"{what} exited with {done.returncode}: {' '.join(cmd)}\n  stderr: {tail}")
    return done.stdout


# ----------------------------------------------------------------------------
# the model

def tokenizer_args(tokenizer_dir):
    if tokenizer_dir and all(os.path.isfile(os.path.join(tokenizer_dir, f))
                             for f in ("vocab.json", "merges.txt")):
        return ["--tokenizer-dir", os.path.abspath(tokenizer_dir)]
    print(f"note: no GPT-2 tokenizer at {tokenizer_dir or '(none given)'}: using the byte-level "
          "tokenizer (one token per byte)")
    return []


def sharpen_final_norm(model_dir):
    """Multiplies ln_f.weight (F32) by LN_F_SCALE in place in model.safetensors."""
    path = os.path.join(model_dir, "model.safetensors")
    header, data_start = gpt2_numpy.read_safetensors_header(path)
    name = next(n for n in header if n.endswith("ln_f.weight"))
    info = header[name]
    if info["dtype"] != "F32":
        raise CheckFailed(f"{path}: {name} is {info['dtype']}, expected F32")
    begin, end = info["data_offsets"]
    with open(path, "r+b") as f:
        f.seek(data_start + begin)
        values = np.frombuffer(f.read(end - begin), dtype="<f4") * np.float32(LN_F_SCALE)
        f.seek(data_start + begin)
        f.write(values.astype("<f4").tobytes())


def ensure_model(work, tokenizer_dir):
    """The test model in work/, made once; cases running in parallel wait on a lock for it."""
    args = MODEL_ARGS + tokenizer_args(tokenizer_dir)
    with open(GENERATOR, "rb") as f:
        stamp = {"args": args, "ln_f_scale": LN_F_SCALE,
                 "generator_sha256": hashlib.sha256(f.read()).hexdigest()}
    model_dir = os.path.join(work, "perplexity-p32")
    os.makedirs(work, exist_ok=True)
    with open(model_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(os.path.join(model_dir, STAMP_NAME), encoding="utf-8") as f:
                if json.load(f) == stamp:
                    return model_dir
        except (OSError, ValueError):
            pass
        shutil.rmtree(model_dir, ignore_errors=True)
        run([sys.executable, GENERATOR, "--out", model_dir, *args], "make_random_model.py")
        sharpen_final_norm(model_dir)
        with open(os.path.join(model_dir, STAMP_NAME), "w", encoding="utf-8") as f:
            json.dump(stamp, f)  # written last: a crash mid-way leaves no stamp, so no reuse
    print(f"model: made {model_dir}")
    return model_dir


# ----------------------------------------------------------------------------
# the reference

def reference_nll(model, ids, context, stride):
    """(mean NLL, tokens scored, windows) by Hugging Face's fixed-length-model loop.

    Per window [begin, end): the labels are the window's ids with all but the last
    end - prev_end masked; logits at position i predict label i + 1."""
    n, prev_end, total, scored, windows = len(ids), 0, 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        window = ids[begin:end]
        target_len = end - prev_end
        labels = [-100] * (len(window) - target_len) + window[len(window) - target_len:]
        logits = gpt2_numpy.forward(model, window)                 # [L, V] float64
        shift_logits, shift_labels = logits[:-1], np.array(labels[1:])
        keep = shift_labels != -100
        if keep.any():
            rows = shift_logits[keep]
            top = rows.max(axis=-1, keepdims=True)
            log_probs = rows - top - np.log(np.exp(rows - top).sum(axis=-1, keepdims=True))
            total -= log_probs[np.arange(len(rows)), shift_labels[keep]].sum()
            scored += int(keep.sum())
            windows += 1
        prev_end = end
        if end == n:
            break
    return total / scored, scored, windows


def round_matrices_to_f16(model):
    """The model --dtype f16 computes: the blocks' four matrices and wte / lm_head rounded to
    half precision; LayerNorms, biases and wpe as stored."""
    half = lambda a: a.astype(np.float16).astype(np.float64)  # noqa: E731
    rounded = dict(model)
    rounded["layers"] = [{k: half(v) if k in ("attn_w", "proj_w", "fc_w", "fc_proj_w") else v
                          for k, v in layer.items()} for layer in model["layers"]]
    rounded["wte"], rounded["lm_head"] = half(model["wte"]), half(model["lm_head"])
    return rounded


# ----------------------------------------------------------------------------
# the cases

class Context:
    def __init__(self, args):
        self.dgpt = args.dgpt
        self.work = args.work
        self.model_dir = ensure_model(args.work, args.tokenizer_dir)
        self._reference = None

    @property
    def reference(self):
        if self._reference is None:
            self._reference = gpt2_numpy.load(self.model_dir)
        return self._reference

    def text_file(self, name, text):
        path = os.path.join(self.work, f"perplexity-{name}.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def token_ids(self, path):
        with open(path, encoding="utf-8") as f:
            out = run([self.dgpt, "tokenize", "--model", self.model_dir], "dgpt tokenize",
                      stdin=f.read())
        return [int(t) for t in out.split()]

    def perplexity(self, path, *options):
        out = run([self.dgpt, "perplexity", "--model", self.model_dir, path, "--json", *options],
                  "dgpt perplexity")
        try:
            return json.loads(out)
        except ValueError as e:
            raise CheckFailed(f"dgpt perplexity --json printed no JSON ({e}): {out[:300]!r}")


def compare(ctx, name, text, context=None, stride=None, max_tokens=None, extra=(), model=None,
            expect_windows=None):
    path = ctx.text_file(name, text)
    ids = ctx.token_ids(path)
    if max_tokens:
        ids = ids[:max_tokens]
    options = list(extra)
    if context:
        options += ["--context", str(context)]
    if stride:
        options += ["--stride", str(stride)]
    if max_tokens:
        options += ["--max-tokens", str(max_tokens)]
    got = ctx.perplexity(path, *options)

    c = context or N_POSITIONS
    s = stride or c // 2
    want, scored, windows = reference_nll(model or ctx.reference, ids, c, s)
    print(f"{len(ids)} tokens, context {c}, stride {s}: reference mean NLL {want:.9f} over "
          f"{scored} tokens in {windows} windows")
    print(f"engine: {json.dumps(got)}")
    checks = [
        (got["tokens"] == len(ids), f"tokens {got['tokens']} vs {len(ids)} from dgpt tokenize"),
        (got["context"] == c and got["stride"] == s, f"context/stride {got['context']}/{got['stride']}"),
        (got["tokens_scored"] == scored, f"tokens_scored {got['tokens_scored']} vs {scored}"),
        (got["windows"] == windows, f"windows {got['windows']} vs {windows}"),
        (abs(got["perplexity"] - math.exp(got["mean_nll"])) <= 1e-9 * got["perplexity"],
         "perplexity = exp(mean_nll)"),
    ]
    if expect_windows is not None:
        checks.append((windows == expect_windows,
                       f"the case wants {expect_windows} window(s), the text gives {windows}"))
    relative = abs(got["mean_nll"] - want) / want
    checks.append((relative <= NLL_TOLERANCE,
                   f"mean NLL {got['mean_nll']:.9f} vs reference {want:.9f}: relative "
                   f"{relative:.2e} (tolerance {NLL_TOLERANCE:g})"))
    for ok, what in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not all(ok for ok, _ in checks):
        raise CheckFailed(f"dgpt perplexity disagrees with the reference on {path}")
    return ids, want


def check_sensitive(ctx, ids, want, context, stride):
    """The comparison must be able to fail: scoring with no overlap, or one token shifted,
    moves the reference's mean NLL by far more than the tolerance."""
    for what, value in [
        ("no overlap (stride = context)", reference_nll(ctx.reference, ids, context, context)[0]),
        ("windows one token later", reference_nll(ctx.reference, ids[1:], context, stride)[0]),
    ]:
        relative = abs(value - want) / want
        ok = relative >= SENSITIVITY_MARGIN * NLL_TOLERANCE
        print(f"{'ok  ' if ok else 'FAIL'} sensitivity: {what} changes the mean NLL by "
              f"{relative:.2e} relative (needs >= {SENSITIVITY_MARGIN * NLL_TOLERANCE:g})")
        if not ok:
            raise CheckFailed("the test model is too flat to tell window rules apart")


def case_strided(ctx):
    """~100+ tokens through a context of 32 with stride 16: every window but the first scores
    16 tokens with 16 of context."""
    ids, want = compare(ctx, "strided", make_text(90, 1), stride=16)
    if len(ids) <= 3 * N_POSITIONS:
        raise CheckFailed(f"the text is only {len(ids)} tokens; it should span several windows")
    check_sensitive(ctx, ids, want, N_POSITIONS, 16)


def case_one_window(ctx):
    """A text that fits one window (defaults: context = n_positions, stride = context / 2)."""
    text = make_text(12, 2)
    ids = ctx.token_ids(ctx.text_file("one_window_probe", text))
    while len(ids) > N_POSITIONS:  # the byte-level tokenizer gives ~5x more tokens
        text = text[: len(text) // 2]
        ids = ctx.token_ids(ctx.text_file("one_window_probe", text))
    compare(ctx, "one_window", text, expect_windows=1)


def case_uneven(ctx):
    """--context 20 --stride 7 (windows do not end on the text's end) with --max-tokens 90 and
    2 threads."""
    compare(ctx, "uneven", make_text(120, 3), context=20, stride=7, max_tokens=90,
            extra=["--threads", "2"])


def case_disjoint(ctx):
    """stride = context: the first token of each window has no context and is not scored."""
    compare(ctx, "disjoint", make_text(90, 4), context=16, stride=16)


def case_dtype(ctx):
    """--dtype reaches the loader: f16 matches the reference with the matrices rounded to half
    precision (and differs from f32); q8_0 runs and stays close to f32."""
    # 2 threads: prefill widens f16 tiles on the pool's threads.
    options = ["--dtype", "f16", "--threads", "2"]
    text = make_text(60, 5)
    compare(ctx, "dtype_f16", text, stride=16, extra=options,
            model=round_matrices_to_f16(ctx.reference))
    path = ctx.text_file("dtype_f16", text)
    got = ctx.perplexity(path, "--stride", "16", *options)
    if got.get("dtype") != "f16" or got.get("head_dtype") != "f16":
        raise CheckFailed(f"--dtype f16 reports dtype {got.get('dtype')!r}, head_dtype "
                          f"{got.get('head_dtype')!r}")
    full = ctx.perplexity(path, "--stride", "16")
    print(f"f32: mean NLL {full['mean_nll']:.9f}, f16: {got['mean_nll']:.9f}")
    if full["mean_nll"] == got["mean_nll"]:
        raise CheckFailed("--dtype f16 gives exactly the f32 result: was it passed through?")
    # q8_0 also quantizes the activations of small batches (the decode kernels), so it has no
    # exact float64 model here: it must run, say q8_0 and stay within 1% of f32.
    q8 = ctx.perplexity(path, "--stride", "16", "--dtype", "q8_0", "--threads", "2")
    relative = abs(q8["mean_nll"] - full["mean_nll"]) / full["mean_nll"]
    print(f"q8_0: mean NLL {q8['mean_nll']:.9f} ({relative:.2e} relative to f32), dtype "
          f"{q8.get('dtype')}, head_dtype {q8.get('head_dtype')}")
    if q8.get("dtype") != "q8_0" or q8.get("head_dtype") != "q8_0":
        raise CheckFailed("--dtype q8_0 is not reported as the weights' and head's format")
    if not 0 < relative < 1e-2:
        raise CheckFailed(f"q8_0 mean NLL {q8['mean_nll']} vs f32 {full['mean_nll']}")


def one_line_error(proc, *needles):
    """The error contract: exit 1, exactly one line on stderr, naming what went wrong."""
    err = proc.stderr
    if proc.returncode != 1 or err.count("\n") != 1 or not err.startswith("dgpt perplexity: "):
        raise CheckFailed(f"expected exit 1 and one 'dgpt perplexity: ' line, got exit "
                          f"{proc.returncode}, stderr {err!r}")
    for needle in needles:
        if needle not in err:
            raise CheckFailed(f"expected {needle!r} in the error, got {err!r}")
    if proc.stdout:
        raise CheckFailed(f"an error printed to stdout: {proc.stdout!r}")
    print("ok  ", err.strip())


def case_errors(ctx):
    """Bad input: one line on stderr, exit 1, nothing on stdout."""
    model = ctx.model_dir
    text = ctx.text_file("errors", make_text(40, 6))
    empty = ctx.text_file("errors-empty", "")
    one_token = ctx.text_file("errors-one", "a")  # one token in any byte-level BPE
    missing = os.path.join(ctx.work, "perplexity-no-such-file.txt")
    no_tokenizer = os.path.join(ctx.work, "perplexity-no-tokenizer")
    shutil.rmtree(no_tokenizer, ignore_errors=True)
    os.makedirs(no_tokenizer)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(model, name), no_tokenizer)

    def dgpt(*args, model_dir=model):
        return subprocess.run([ctx.dgpt, "perplexity", "--model", model_dir, *args],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)

    one_line_error(dgpt(missing), missing, "No such file")
    one_line_error(dgpt(ctx.work), ctx.work)  # a directory, not a file
    one_line_error(dgpt(empty), empty, "0 tokens", "at least 2")
    one_line_error(dgpt(one_token), one_token, "1 token", "at least 2")
    one_line_error(dgpt(text, "--max-tokens", "1"), "--max-tokens", "at least 2")
    one_line_error(dgpt(text, "--context", str(N_POSITIONS + 1)),
                   f"--context {N_POSITIONS + 1}", f"context of {N_POSITIONS} tokens")
    one_line_error(dgpt(text, "--context", "1"), "--context 1")
    one_line_error(dgpt(text, "--stride", "0"), "--stride 0")
    one_line_error(dgpt(text, "--stride", "-3"), "--stride -3")
    one_line_error(dgpt(text, "--context", "16", "--stride", "17"), "--stride 17",
                   "context of 16")
    one_line_error(dgpt(text, model_dir=no_tokenizer), no_tokenizer, "no tokenizer found")
    one_line_error(dgpt(text, "--dtype", "f8"), "--dtype", "f8")
    one_line_error(dgpt(text, model_dir=os.path.join(ctx.work, "no-such-model")), "no-such-model")


CASES = {
    "strided": case_strided,
    "one_window": case_one_window,
    "uneven": case_uneven,
    "disjoint": case_disjoint,
    "dtype": case_dtype,
    "errors": case_errors,
}


def main(argv):
    p = argparse.ArgumentParser(description="Check dgpt perplexity against the numpy reference.")
    p.add_argument("--dgpt", help="the dgpt binary")
    p.add_argument("--work", help="scratch folder for the model and text files")
    p.add_argument("--tokenizer-dir", help="GPT-2 vocab.json + merges.txt (optional)")
    p.add_argument("--case", action="append", default=[], help="case to run (repeatable; 'all')")
    p.add_argument("--list", action="store_true", help="print the case names and exit")
    p.add_argument("--expect-cases", metavar="A;B;...",
                   help="exit 1 unless the case list is exactly this (keeps CMake in sync)")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    if args.expect_cases is not None:
        expected = [n for n in args.expect_cases.split(";") if n]
        if expected != list(CASES):
            print(f"error: CMake registers {expected} but check_perplexity.py has {list(CASES)}: "
                  "update DGPT_PERPLEXITY_CASES in tests/reference/CMakeLists.txt")
            return 1
        print(f"ok: CMake's case list matches check_perplexity.py ({len(CASES)} cases)")
        return 0
    if not args.dgpt or not args.work or not args.case:
        print("error: --dgpt, --work and --case are required (see --help)")
        return 1
    names = list(CASES) if "all" in args.case else args.case
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"error: unknown case(s) {unknown}; cases: {', '.join(CASES)}")
        return 1
    failed = []
    try:
        ctx = Context(args)
    except CheckFailed as e:
        print(f"error: {e}")
        return 1
    for name in names:
        print(f"=== perplexity_{name}: {' '.join(CASES[name].__doc__.split())}")
        try:
            CASES[name](ctx)
            print(f"=== perplexity_{name}: all good")
        except CheckFailed as e:
            print(f"error: perplexity_{name}: {e}")
            failed.append(name)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
