#!/usr/bin/python3
"""An independent numpy GPT-2 (inference only), the yardstick for the C++ engine.

Written from the GPT-2 architecture (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners", and the GPT-1 paper it builds on), not from the engine:
  x = wte[ids] + wpe[positions]
  per block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))       (pre-LayerNorm)
  attn: causal multi-head self-attention, scores scaled by 1/sqrt(head_dim)
  mlp:  c_proj(gelu_new(c_fc(x))), gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  logits = ln_f(x) @ wte^T   (or lm_head.weight^T when the checkpoint stores one)
Linear layers are HF "Conv1D": weight stored [in, out], y = x @ W + b.

Everything is computed in float64: stored weights are converted to float32 exactly as stored
(F16/BF16 widen losslessly), then to float64, so the result is the exact model up to float64
rounding (~1e-15 relative) and any difference to a float32 engine is the engine's own error.

It reads model.safetensors and config.json itself (no torch, no safetensors package).

Shape letters: T = tokens, C = n_embd, H = heads, D = head size (C / H), V = vocab, P = positions.

Usage: gpt2_numpy.py --model DIR --ids 1,2,3 [--greedy N] [--logits-out FILE]
       gpt2_numpy.py --self-check
"""

import argparse
import json
import math
import mmap
import os
import sys

import numpy as np

TRANSFORMER_PREFIX = "transformer."


# ----------------------------------------------------------------------------
# reading a checkpoint

def read_safetensors_header(path):
    """(header dict, byte offset of the data section) of a safetensors file."""
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    return header, 8 + header_len


def decode_stored(raw, dtype):
    """float32 array from the raw little-endian bytes of an F32, F16 or BF16 tensor."""
    if dtype == "F32":
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)  # exact widening
    if dtype == "BF16":
        # bf16 is the upper half of a float32: shift the bits back into place.
        upper = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (upper << np.uint32(16)).view(np.float32)
    raise ValueError(f"unsupported dtype {dtype} (expected F32, F16 or BF16)")


def read_tensors(path):
    """{name without 'transformer.': float64 array} for every tensor in a safetensors file."""
    header, data_start = read_safetensors_header(path)
    tensors = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            raw = mapped[data_start + begin:data_start + end]
            values = decode_stored(raw, info["dtype"]).reshape(info["shape"])
            short = name[len(TRANSFORMER_PREFIX):] if name.startswith(TRANSFORMER_PREFIX) else name
            tensors[short] = values.astype(np.float64)
    return tensors


def load(model_dir):
    """Reads config.json + model.safetensors into a dict of float64 arrays and hyperparameters."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    t = read_tensors(os.path.join(model_dir, "model.safetensors"))
    n_layer, n_head = config["n_layer"], config["n_head"]
    layers = []
    for i in range(n_layer):
        h = f"h.{i}."
        layers.append({
            "ln_1_w": t[h + "ln_1.weight"], "ln_1_b": t[h + "ln_1.bias"],              # [C]
            "attn_w": t[h + "attn.c_attn.weight"], "attn_b": t[h + "attn.c_attn.bias"],  # [C, 3C], [3C]
            "proj_w": t[h + "attn.c_proj.weight"], "proj_b": t[h + "attn.c_proj.bias"],  # [C, C], [C]
            "ln_2_w": t[h + "ln_2.weight"], "ln_2_b": t[h + "ln_2.bias"],              # [C]
            "fc_w": t[h + "mlp.c_fc.weight"], "fc_b": t[h + "mlp.c_fc.bias"],          # [C, 4C], [4C]
            "fc_proj_w": t[h + "mlp.c_proj.weight"], "fc_proj_b": t[h + "mlp.c_proj.bias"],  # [4C, C], [C]
        })
        # h.{i}.attn.bias / masked_bias (old causal-mask buffers) are not weights: ignored.
    return {
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": config["n_embd"],
        "n_positions": config["n_positions"],
        "eps": config.get("layer_norm_epsilon", 1e-5),
        "wte": t["wte.weight"],                          # [V, C]
        "wpe": t["wpe.weight"],                          # [P, C]
        "layers": layers,
        "ln_f_w": t["ln_f.weight"], "ln_f_b": t["ln_f.bias"],  # [C]
        "lm_head": t.get("lm_head.weight", t["wte.weight"]),   # [V, C], tied unless stored
    }


def quantize_q8_0_rows(m):
    """Each row of m [R, K] (K % 32 == 0) through q8_0 and back, as float64: per block of 32,
    scale = f16(min(max|x| / 127, 65504)) (float32 arithmetic), d = float(scale),
    q = clip(round_half_even(x / d), -127, 127) (float32 division), value = d * q.
    Written from the format's definition in engine/kernels/kernels.h, not from its code."""
    x = m.astype(np.float32).reshape(m.shape[0], -1, 32)      # [R, K/32, 32]
    amax = np.max(np.abs(x), axis=2, keepdims=True)
    scale = np.minimum(amax / np.float32(127), np.float32(65504)).astype(np.float16)
    d = scale.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d == 0, np.float32(0), np.clip(np.rint(x / d), -127, 127))
    return (d.astype(np.float64) * q.astype(np.float64)).reshape(m.shape)


def with_weight_format(model, fmt):
    """The model as the engine computes it with --dtype fmt: the weight matrices (each block's
    four, lm_head, and wte when the head is tied to it: embeddings then read that one copy)
    rounded to f16 or through q8_0. Conv1D weights [in, out] are quantized along `in` (the
    engine stores them one output per row); with q8_0 the inputs of every linear layer are
    quantized too (linear_input)."""
    if fmt in (None, "f32"):
        return model
    if fmt == "f16":
        convert = lambda m: m.astype(np.float16).astype(np.float64)  # noqa: E731
        conv1d = convert
    elif fmt == "q8_0":
        convert = quantize_q8_0_rows
        conv1d = lambda m: quantize_q8_0_rows(m.T).T  # noqa: E731
    else:
        raise ValueError(f"unknown weight format {fmt}")
    out = dict(model)
    out["q8_inputs"] = fmt == "q8_0"
    out["layers"] = [dict(layer) for layer in model["layers"]]
    for layer in out["layers"]:
        for key in ("attn_w", "proj_w", "fc_w", "fc_proj_w"):
            layer[key] = conv1d(layer[key])
    if model["lm_head"] is model["wte"]:
        out["wte"] = out["lm_head"] = convert(model["wte"])
    else:  # embeddings keep the stored wte; only the head is converted
        out["lm_head"] = convert(model["lm_head"])
    return out


# ----------------------------------------------------------------------------
# the ops

def layernorm(x, weight, bias, eps):
    """Normalizes each row of x [T, C] to mean 0, (biased) variance 1, then scales and shifts."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu_new(x):
    """GPT-2's tanh approximation of GELU."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    """Softmax over the last axis; the max is subtracted only for numerical stability."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def split_heads(x, n_head):
    """[T, C] -> [H, T, D]: head h owns columns h*D .. (h+1)*D."""
    T, C = x.shape
    return x.reshape(T, n_head, C // n_head).transpose(1, 0, 2)


def merge_heads(x):
    """[H, T, D] -> [T, C]."""
    H, T, D = x.shape
    return x.transpose(1, 0, 2).reshape(T, H * D)


def attention(q, k, v, q_pos0):
    """Causal attention of queries at positions q_pos0.. over keys/values at positions 0..

    q: [H, Tq, D], k, v: [H, Tk, D] -> [H, Tq, D]. A query at position p sees keys 0..p."""
    D = q.shape[-1]
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(D)          # [H, Tq, Tk]
    q_positions = q_pos0 + np.arange(q.shape[1])[:, None]     # [Tq, 1]
    k_positions = np.arange(k.shape[1])[None, :]              # [1, Tk]
    scores = np.where(k_positions <= q_positions, scores, -np.inf)
    return softmax(scores) @ v                                # [H, Tq, D]


def linear_input(model, x):
    """What a linear layer multiplies: x itself, or with q8_0 weights x rounded through q8_0
    row by row (the engine quantizes its float32 activations before every q8_0 product)."""
    return quantize_q8_0_rows(x) if model.get("q8_inputs") else x


def mlp(model, x, layer):
    h = gelu_new(linear_input(model, x) @ layer["fc_w"] + layer["fc_b"])   # [T, 4C]
    return linear_input(model, h) @ layer["fc_proj_w"] + layer["fc_proj_b"]  # [T, C]


def embed(model, ids, pos0):
    """Token + position embeddings of ids placed at positions pos0.. -> [T, C]."""
    ids = np.asarray(ids, dtype=np.int64)
    end = pos0 + len(ids)
    if end > model["n_positions"]:
        raise ValueError(f"{end} tokens exceed n_positions {model['n_positions']}")
    if len(ids) and (ids.min() < 0 or ids.max() >= model["wte"].shape[0]):
        raise ValueError(f"token id out of range [0, {model['wte'].shape[0]})")
    return model["wte"][ids] + model["wpe"][pos0:end]


def lm_logits(model, x):
    """Final LayerNorm and the LM head: x [T, C] -> logits [T, V]."""
    normed = layernorm(x, model["ln_f_w"], model["ln_f_b"], model["eps"])
    return linear_input(model, normed) @ model["lm_head"].T


# ----------------------------------------------------------------------------
# the model

def forward(model, ids):
    """Logits [T, V] (float64) for every position of ids, recomputed from scratch."""
    x = embed(model, ids, 0)                                  # [T, C]
    for layer in model["layers"]:
        a = layernorm(x, layer["ln_1_w"], layer["ln_1_b"], model["eps"])
        qkv = linear_input(model, a) @ layer["attn_w"] + layer["attn_b"]  # [T, 3C]
        q, k, v = (split_heads(m, model["n_head"]) for m in np.split(qkv, 3, axis=-1))
        y = merge_heads(attention(q, k, v, 0))                # [T, C]
        x = x + linear_input(model, y) @ layer["proj_w"] + layer["proj_b"]
        x = x + mlp(model, layernorm(x, layer["ln_2_w"], layer["ln_2_b"], model["eps"]), layer)
    return lm_logits(model, x)


def new_cache(model):
    """An empty KV cache: per layer, keys and values [H, T, D] of the positions seen so far."""
    H, D = model["n_head"], model["n_embd"] // model["n_head"]
    return [{"k": np.zeros((H, 0, D)), "v": np.zeros((H, 0, D))} for _ in model["layers"]]


def forward_cached(model, ids, cache, pos0):
    """Logits [len(ids), V] for ids at positions pos0.., appending their keys/values to cache.

    REQUIRES: cache holds exactly positions 0..pos0-1 (call with pos0 = tokens seen so far)."""
    x = embed(model, ids, pos0)                               # [T, C]
    for layer, kv in zip(model["layers"], cache):
        if kv["k"].shape[1] != pos0:
            raise ValueError(f"cache holds {kv['k'].shape[1]} positions, pos0 is {pos0}")
        a = layernorm(x, layer["ln_1_w"], layer["ln_1_b"], model["eps"])
        qkv = linear_input(model, a) @ layer["attn_w"] + layer["attn_b"]  # [T, 3C]
        q, k, v = (split_heads(m, model["n_head"]) for m in np.split(qkv, 3, axis=-1))
        kv["k"] = np.concatenate([kv["k"], k], axis=1)        # [H, pos0 + T, D]
        kv["v"] = np.concatenate([kv["v"], v], axis=1)
        y = merge_heads(attention(q, kv["k"], kv["v"], pos0))  # [T, C]
        x = x + linear_input(model, y) @ layer["proj_w"] + layer["proj_b"]
        x = x + mlp(model, layernorm(x, layer["ln_2_w"], layer["ln_2_b"], model["eps"]), layer)
    return lm_logits(model, x)


def greedy(model, ids, n, step_logits=None):
    """n greedy (argmax) tokens after the prompt ids, using the KV cache.

    If step_logits is a list, the logits [V] each token was chosen from are appended to it.
    Ties go to the lowest id (np.argmax)."""
    cache = new_cache(model)
    logits = forward_cached(model, ids, cache, 0)[-1]         # [V]
    generated = []
    for _ in range(n):
        token = int(np.argmax(logits))
        generated.append(token)
        if step_logits is not None:
            step_logits.append(logits)
        if len(generated) == n:
            break
        logits = forward_cached(model, [token], cache, len(ids) + len(generated) - 1)[-1]
    return generated


def top2_gap(logits):
    """Difference between the largest and second-largest logit (how close a near-tie is)."""
    top2 = np.partition(logits, -2)[-2:]
    return float(top2[1] - top2[0])


# ----------------------------------------------------------------------------
# self-check: the reference must be trustworthy before it judges the engine

def _naive_layernorm(row, weight, bias, eps):
    n = len(row)
    mean = sum(row) / n
    var = sum((r - mean) ** 2 for r in row) / n
    return [(r - mean) / math.sqrt(var + eps) * w + b for r, w, b in zip(row, weight, bias)]


def _naive_gelu(v):
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))


def _naive_softmax(row):
    m = max(row)
    e = [math.exp(r - m) for r in row]
    return [x / sum(e) for x in e]


def _naive_linear(row, weight, bias):
    """row [in] @ weight [in][out] + bias [out], by loops."""
    return [sum(row[i] * weight[i][j] for i in range(len(row))) + bias[j]
            for j in range(len(bias))]


def _naive_forward(model, ids):
    """The whole model by explicit Python loops (tiny shapes only): an independent check of
    the numpy version's reshapes, head split, masking and residuals."""
    C, H = model["n_embd"], model["n_head"]
    D = C // H
    tolist = lambda a: a.tolist()  # noqa: E731
    x = [[model["wte"][t][c] + model["wpe"][p][c] for c in range(C)] for p, t in enumerate(ids)]
    for layer in model["layers"]:
        L = {k: tolist(v) for k, v in layer.items()}
        qkv = [_naive_linear(_naive_layernorm(r, L["ln_1_w"], L["ln_1_b"], model["eps"]),
                             L["attn_w"], L["attn_b"]) for r in x]
        y = [[0.0] * C for _ in ids]
        for h in range(H):
            for tq in range(len(ids)):
                q = qkv[tq][h * D:(h + 1) * D]
                scores = [sum(q[d] * qkv[tk][C + h * D + d] for d in range(D)) / math.sqrt(D)
                          for tk in range(tq + 1)]  # causal: keys 0..tq only
                weights = _naive_softmax(scores)
                for d in range(D):
                    y[tq][h * D + d] = sum(weights[tk] * qkv[tk][2 * C + h * D + d]
                                           for tk in range(tq + 1))
        x = [[a + b for a, b in zip(r, _naive_linear(yr, L["proj_w"], L["proj_b"]))]
             for r, yr in zip(x, y)]
        for t in range(len(ids)):
            a = _naive_layernorm(x[t], L["ln_2_w"], L["ln_2_b"], model["eps"])
            h = [_naive_gelu(v) for v in _naive_linear(a, L["fc_w"], L["fc_b"])]
            x[t] = [a + b for a, b in zip(x[t], _naive_linear(h, L["fc_proj_w"], L["fc_proj_b"]))]
    head = tolist(model["lm_head"])
    out = []
    for r in x:
        n = _naive_layernorm(r, tolist(model["ln_f_w"]), tolist(model["ln_f_b"]), model["eps"])
        out.append([sum(n[c] * head[v][c] for c in range(C)) for v in range(len(head))])
    return np.array(out)


def _half_to_float(bits):
    """IEEE binary16 bits -> value, from the format's definition (no numpy)."""
    sign = -1.0 if bits & 0x8000 else 1.0
    exponent, mantissa = (bits >> 10) & 0x1F, bits & 0x3FF
    if exponent == 0:
        return sign * mantissa * 2.0 ** -24              # subnormal
    if exponent == 31:
        return sign * math.inf if mantissa == 0 else math.nan
    return sign * (1 + mantissa / 1024) * 2.0 ** (exponent - 15)


def _bf16_to_float(bits):
    """bfloat16 bits (8 exponent bits, 7 mantissa bits) -> value, from the definition."""
    sign = -1.0 if bits & 0x8000 else 1.0
    exponent, mantissa = (bits >> 7) & 0xFF, bits & 0x7F
    if exponent == 0:
        return sign * mantissa * 2.0 ** -133             # subnormal
    if exponent == 255:
        return sign * math.inf if mantissa == 0 else math.nan
    return sign * (1 + mantissa / 128) * 2.0 ** (exponent - 127)


def _write_raw_safetensors(path, tensors):
    """Writes {name: (dtype, shape, raw bytes)} as a safetensors file (independent of the
    generator, to check the reader on hand-chosen bit patterns)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for _, _, raw in tensors.values():
            f.write(raw)


class _Checks:
    def __init__(self):
        self.failures = 0

    def expect(self, ok, what, detail=""):
        print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
        self.failures += 0 if ok else 1

    def close(self, what, got, want, tol):
        diff = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
        self.expect(diff <= tol, what, f"max abs diff {diff:.3g} (tolerance {tol:g})")


def _check_ops(checks):
    rng = np.random.default_rng(1)
    row, w, b = rng.normal(size=7), 1 + 0.1 * rng.normal(size=7), 0.05 * rng.normal(size=7)
    checks.close("layernorm vs loops", layernorm(row[None, :], w, b, 1e-5)[0],
                 _naive_layernorm(row.tolist(), w.tolist(), b.tolist(), 1e-5), 1e-12)
    checks.close("gelu_new vs loops", gelu_new(3 * row), [_naive_gelu(v) for v in 3 * row], 1e-12)
    # gelu_new at known points: 0 -> 0, large x -> x, large -x -> 0
    checks.close("gelu_new fixed points", gelu_new(np.array([0.0, 10.0, -10.0])), [0.0, 10.0, 0.0], 1e-12)
    checks.close("softmax vs loops", softmax(5 * row), _naive_softmax((5 * row).tolist()), 1e-12)


def _check_dtype_reading(checks, tmp):
    half_bits = [0x3C00, 0xC000, 0x3555, 0x0001, 0x7BFF, 0x8400, 0x0000, 0x03FF]
    bf16_bits = [0x3F80, 0xC040, 0x3EAB, 0x0001, 0x7F7F, 0x8080, 0x0000, 0x4049]
    f32_values = [1.0, -2.5, 0.1, 3.0e-39, 1.0e30, -7.0, 0.0, 65504.0]
    pack = lambda bits: b"".join(v.to_bytes(2, "little") for v in bits)  # noqa: E731
    path = os.path.join(tmp, "dtypes.safetensors")
    _write_raw_safetensors(path, {
        "transformer.a": ("F16", [2, 4], pack(half_bits)),
        "b": ("BF16", [8], pack(bf16_bits)),
        "c": ("F32", [8], np.array(f32_values, dtype="<f4").tobytes()),
    })
    t = read_tensors(path)
    checks.expect(sorted(t) == ["a", "b", "c"], "prefix stripped", str(sorted(t)))
    checks.expect(t["a"].shape == (2, 4), "shape kept", str(t["a"].shape))
    checks.expect(t["a"].ravel().tolist() == [_half_to_float(b) for b in half_bits],
                  "F16 bits -> values as defined", str(t["a"].ravel().tolist()))
    checks.expect(t["b"].tolist() == [_bf16_to_float(b) for b in bf16_bits],
                  "BF16 bits -> values as defined", str(t["b"].tolist()))
    checks.expect(t["c"].tolist() == [float(np.float32(v)) for v in f32_values], "F32 values")


def _make_model(tmp, name, *extra):
    """Writes a random model with weights/make_random_model.py and returns its folder."""
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "weights"))
    import make_random_model  # noqa: E402  (lives outside this package)
    out = os.path.join(tmp, name)
    make_random_model.main(["--out", out, *extra])
    return out


def _check_model(checks, tmp):
    base = ["--n-layer", "2", "--n-head", "2", "--n-embd", "8", "--n-positions", "16", "--seed", "3",
            "--linear-std", "0.55"]
    model = load(_make_model(tmp, "tiny", *base))
    ids = [5, 200, 17, 17, 256, 0, 99]
    logits = forward(model, ids)                              # [T, V]
    checks.close("forward vs explicit loops", logits, _naive_forward(model, ids), 1e-12)

    cache = new_cache(model)
    stepwise = np.concatenate([forward_cached(model, [t], cache, p) for p, t in enumerate(ids)])
    checks.close("forward vs forward_cached token by token", stepwise, logits, 1e-10)
    cache = new_cache(model)
    split = np.concatenate([forward_cached(model, ids[:3], cache, 0),
                            forward_cached(model, ids[3:], cache, 3)])
    checks.close("forward vs forward_cached prefill 3 + chunk", split, logits, 1e-10)

    generated = greedy(model, ids, 5)
    recomputed, seq = [], list(ids)
    for _ in range(5):
        recomputed.append(int(np.argmax(forward(model, seq)[-1])))
        seq.append(recomputed[-1])
    checks.expect(generated == recomputed, "greedy (cached) == argmax of full recompute",
                  f"{generated} vs {recomputed}")

    # Same seed, other layouts: the prefix and an explicit lm_head change nothing.
    other = load(_make_model(tmp, "noprefix", *base, "--no-prefix", "--with-lm-head", "--with-attn-bias"))
    checks.close("no prefix + lm_head + attn.bias loads the same model", forward(other, ids), logits, 0.0)

    # f16/bf16 files hold the f32 values rounded; the reader must widen them exactly.
    f32 = read_tensors(os.path.join(tmp, "tiny", "model.safetensors"))
    for dtype, rounding in (("f16", lambda a: a.astype(np.float16).astype(np.float64)),
                            ("bf16", _round_bf16_by_hand)):
        stored = read_tensors(os.path.join(_make_model(tmp, dtype, *base, "--dtype", dtype),
                                           "model.safetensors"))
        w = "h.1.mlp.c_fc.weight"
        checks.close(f"{dtype} file = f32 values rounded to {dtype}", stored[w], rounding(f32[w]), 0.0)


def _round_bf16_by_hand(values):
    """Rounds float64 values (all exactly float32) to bfloat16, nearest-even, in plain Python."""
    out = []
    for v in values.ravel().tolist():
        bits = int(np.array(v, dtype=np.float32).view(np.uint32))
        upper, lower = bits >> 16, bits & 0xFFFF
        if lower > 0x8000 or (lower == 0x8000 and upper & 1):
            upper += 1
        out.append(_bf16_to_float(upper))
    return np.array(out).reshape(values.shape)


def _check_not_degenerate(checks, tmp):
    """Random models must give clear argmaxes, or engine/reference agreement means little."""
    model = load(_make_model(tmp, "gap", "--seed", "0"))      # the generator's default shape
    ids = np.random.default_rng(0).integers(0, 257, size=40).tolist()
    gaps = [top2_gap(row) for row in forward(model, ids)]
    median = float(np.median(gaps))
    spread = float(np.std(forward(model, ids)))
    checks.expect(median > 1e-3, "random model's top-2 logit gap is not degenerate",
                  f"median gap {median:.3g}, logit std {spread:.3g}")

    # With check_engine.py's --linear-std, greedy output must depend on the context rather
    # than repeat one token, or comparing greedy sequences would prove little.
    model = load(_make_model(tmp, "varied", "--seed", "0", "--linear-std", "0.2"))
    step_logits = []
    generated = greedy(model, ids[:20], 16, step_logits)
    smallest = min(top2_gap(row) for row in step_logits)
    checks.expect(len(set(generated)) >= 6 and smallest > 1e-4,
                  "greedy output of a --linear-std 0.2 model varies, without near-ties",
                  f"{len(set(generated))} distinct tokens in {generated}, smallest gap {smallest:.3g}")


def self_check():
    import tempfile
    checks = _Checks()
    with tempfile.TemporaryDirectory(prefix="gpt2_numpy_selfcheck_") as tmp:
        _check_ops(checks)
        _check_dtype_reading(checks, tmp)
        _check_model(checks, tmp)
        _check_not_degenerate(checks, tmp)
    if checks.failures:
        print(f"gpt2_numpy self-check: {checks.failures} check(s) FAILED")
        return 1
    print("gpt2_numpy self-check: all good")
    return 0


# ----------------------------------------------------------------------------
# command line

def parse_ids(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv):
    p = argparse.ArgumentParser(description="Reference GPT-2 inference in numpy (float64).")
    p.add_argument("--model", help="folder with config.json and model.safetensors")
    p.add_argument("--ids", help="comma-separated prompt token ids")
    p.add_argument("--greedy", type=int, default=0, metavar="N", help="generate N greedy tokens")
    p.add_argument("--logits-out", metavar="FILE",
                   help="write the prompt's logits [T, V] as raw little-endian float32")
    p.add_argument("--self-check", action="store_true", help="test this implementation and exit")
    args = p.parse_args(argv)
    if args.self_check:
        return self_check()
    if not args.model or not args.ids:
        p.error("--model and --ids are required")

    model = load(args.model)
    ids = parse_ids(args.ids)
    if args.logits_out:
        forward(model, ids).astype("<f4").tofile(args.logits_out)
    generated = greedy(model, ids, args.greedy) if args.greedy else []
    print(json.dumps({"prompt_ids": ids, "generated": generated}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
