#!/usr/bin/python3
"""Writes a small GPT-2 model with RANDOM weights, laid out exactly like a Hugging Face checkpoint.

The folder holds config.json, model.safetensors, vocab.json and merges.txt, so every code path
that loads a real GPT-2 (distilgpt2, gpt2, ...) can be tested without downloading one. The
weights are meaningless: generated text is noise, but it is the same noise for the same
arguments, so the engine can be compared number for number with tests/reference/gpt2_numpy.py.

Each tensor is drawn from its own numpy default_rng keyed by (seed, tensor name without the
`transformer.` prefix), so values don't depend on tensor order, prefix, dtype or memory layout.

Shape letters: L = layers, H = heads, C = n_embd, P = n_positions, V = vocab size.
"""

import argparse
import json
import os
import shutil
import sys
import zlib

import numpy as np

PRESETS = {
    # name: (n_layer, n_head, n_embd, n_positions, vocab_size or None for the tokenizer's size)
    "gpt2": (12, 12, 768, 1024, 50257),
    "distilgpt2": (6, 12, 768, 1024, 50257),
    "tiny": (1, 1, 32, 64, None),
}
DEFAULTS = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "vocab_size": None}

ENDOFTEXT = "<|endoftext|>"
SAFETENSORS_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
TORCH_DTYPE = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
BYTES_PER_VALUE = {"F32": 4, "F16": 2, "BF16": 2}

# Standard deviations of the random values. 0.02 is GPT-2's initializer_range; biases get the
# same spread (not zero) so a dropped bias changes the logits; LayerNorm parameters are kept
# near their identity values (1, 0) but not on them, so a skipped gamma/beta shows too.
# With every weight at 0.02 the residual stream is dominated by the token's own embedding and
# the tied LM head makes greedy decoding repeat one token forever; tests that compare greedy
# sequences raise the Conv1D weights' spread with --linear-std (about 1.6/sqrt(n_embd)) so the
# attention is peaked and each step's choice depends on the context.
EMBEDDING_STD = 0.02
LINEAR_STD = 0.02  # default of --linear-std
BIAS_STD = 0.02
LN_WEIGHT_STD = 0.1
LN_BIAS_STD = 0.05


# ----------------------------------------------------------------------------
# tokenizer files

def bytes_to_unicode():
    """GPT-2's byte -> printable unicode character table, in GPT-2's order.

    Printable Latin-1 bytes map to themselves; the other 68 bytes are shifted to U+0100 and
    up. The list order is the order of ids 0..255 in GPT-2's own vocab.json ("!" is id 0).
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    byte_values = printable[:]
    code_points = printable[:]
    shifted = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            code_points.append(256 + shifted)
            shifted += 1
    return list(zip(byte_values, (chr(c) for c in code_points)))


def byte_level_vocab():
    """The minimal byte-level vocabulary: the 256 byte symbols (ids 0..255) + <|endoftext|>."""
    vocab = {symbol: token_id for token_id, (_, symbol) in enumerate(bytes_to_unicode())}
    vocab[ENDOFTEXT] = len(vocab)  # 256
    return vocab


def tokenizer_vocab(tokenizer_dir):
    """The vocabulary (token -> id) of tokenizer_dir's vocab.json, or the byte-level one."""
    if not tokenizer_dir:
        return byte_level_vocab()
    for name in ("vocab.json", "merges.txt"):
        if not os.path.isfile(os.path.join(tokenizer_dir, name)):
            sys.exit(f"error: {os.path.join(tokenizer_dir, name)} not found "
                     "(--tokenizer-dir must hold vocab.json and merges.txt)")
    with open(os.path.join(tokenizer_dir, "vocab.json"), encoding="utf-8") as f:
        return json.load(f)


def write_tokenizer(out_dir, tokenizer_dir, vocab):
    """Copies vocab.json + merges.txt from tokenizer_dir, or writes the byte-level files."""
    if tokenizer_dir:
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(out_dir, name))
        return
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")  # no merges: every byte stays its own token


# ----------------------------------------------------------------------------
# tensors

def tensor_specs(n_layer, n_embd, n_positions, vocab_size, with_attn_bias, with_lm_head):
    """(name without prefix, shape, kind) of every tensor, in GPT2LMHeadModel's order.

    kind says how the values are drawn; Conv1D weights are [in, out] as HF stores them."""
    C, P, V = n_embd, n_positions, vocab_size
    specs = [("wte.weight", (V, C), "embedding"), ("wpe.weight", (P, C), "embedding")]
    for i in range(n_layer):
        h = f"h.{i}."
        specs += [
            (h + "ln_1.weight", (C,), "ln_weight"),
            (h + "ln_1.bias", (C,), "ln_bias"),
        ]
        if with_attn_bias:
            specs.append((h + "attn.bias", (1, 1, P, P), "causal_mask"))
        specs += [
            (h + "attn.c_attn.weight", (C, 3 * C), "linear"),
            (h + "attn.c_attn.bias", (3 * C,), "bias"),
            (h + "attn.c_proj.weight", (C, C), "linear"),
            (h + "attn.c_proj.bias", (C,), "bias"),
            (h + "ln_2.weight", (C,), "ln_weight"),
            (h + "ln_2.bias", (C,), "ln_bias"),
            (h + "mlp.c_fc.weight", (C, 4 * C), "linear"),
            (h + "mlp.c_fc.bias", (4 * C,), "bias"),
            (h + "mlp.c_proj.weight", (4 * C, C), "linear"),
            (h + "mlp.c_proj.bias", (C,), "bias"),
        ]
    specs += [("ln_f.weight", (C,), "ln_weight"), ("ln_f.bias", (C,), "ln_bias")]
    if with_lm_head:
        specs.append(("lm_head.weight", (V, C), "tied_wte"))
    return specs


def tensor_rng(seed, name):
    """An rng private to one tensor: same (seed, name) -> same values, whatever else changes."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def random_tensor(seed, name, shape, kind, linear_std=LINEAR_STD):
    """The float32 values of one tensor."""
    if kind == "causal_mask":
        P = shape[-1]
        return np.tril(np.ones((P, P), dtype=np.float32)).reshape(shape)  # [1, 1, P, P]
    if kind == "tied_wte":
        name = "wte.weight"  # lm_head is an explicit copy of the token embedding
    values = tensor_rng(seed, name).standard_normal(shape, dtype=np.float32)
    # In place: the token embedding of a 50k vocabulary is 150 MB, one copy is enough.
    if kind == "ln_weight":
        values *= np.float32(LN_WEIGHT_STD)
        values += np.float32(1.0)
    elif kind == "ln_bias":
        values *= np.float32(LN_BIAS_STD)
    elif kind == "bias":
        values *= np.float32(BIAS_STD)
    elif kind == "linear":
        values *= np.float32(linear_std)
    else:  # embedding, tied_wte
        values *= np.float32(EMBEDDING_STD)
    return values


def float32_to_bf16_bits(values):
    """bfloat16 bit patterns (uint16) of float32 values, rounded to nearest, ties to even.

    bf16 is the upper half of a float32; adding 0x7FFF plus the lowest kept bit before
    truncating rounds half-way cases to the even neighbour. The sum only wraps around 2^32
    for NaN bit patterns, which are replaced by a quiet NaN."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
               >> np.uint32(16)).astype(np.uint16)
    rounded[np.isnan(values)] = 0x7FC0
    return rounded


def encode_tensor(values, st_dtype):
    """A little-endian buffer of a float32 array stored as st_dtype (F32, F16 or BF16)."""
    if st_dtype == "F32":
        encoded = values.astype("<f4", copy=False)
    elif st_dtype == "F16":
        encoded = values.astype("<f2")  # numpy rounds to nearest, ties to even
    else:
        encoded = float32_to_bf16_bits(values).astype("<u2", copy=False)
    return memoryview(np.ascontiguousarray(encoded)).cast("B")


# ----------------------------------------------------------------------------
# safetensors

def safetensors_header(entries):
    """The header bytes (8-byte length + space-padded JSON) for [(name, dtype, shape)].

    Tensors are laid out back to back in the given order."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        size = BYTES_PER_VALUE[dtype] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # data section starts 8-byte aligned
    return len(text).to_bytes(8, "little") + text


def write_safetensors(path, seed, specs, prefix, weight_dtype, linear_std):
    """Generates and writes the tensors one at a time, so memory stays at one tensor."""
    def stored_dtype(kind):
        return "F32" if kind == "causal_mask" else weight_dtype  # old checkpoints' mask is F32

    def stored_name(name):
        return name if name.startswith("lm_head.") else prefix + name

    entries = [(stored_name(name), stored_dtype(kind), shape) for name, shape, kind in specs]
    tmp_path = path + ".tmp"
    with open(tmp_path, "wb") as f:
        f.write(safetensors_header(entries))
        for (name, shape, kind), (_, dtype, _) in zip(specs, entries):
            f.write(encode_tensor(random_tensor(seed, name, shape, kind, linear_std), dtype))
    os.replace(tmp_path, path)  # never leave a half-written model.safetensors behind


# ----------------------------------------------------------------------------
# config.json

def hf_config(n_layer, n_head, n_embd, n_positions, vocab_size, eos_id, dtype, seed):
    """config.json with the keys transformers writes for GPT2LMHeadModel (sorted, as HF does)."""
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": eos_id,
        "dgpt_random_seed": seed,  # marks the weights as random; HF ignores unknown keys
        "embd_pdrop": 0.1,
        "eos_token_id": eos_id,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": n_positions,
        "n_embd": n_embd,
        "n_head": n_head,
        "n_inner": None,
        "n_layer": n_layer,
        "n_positions": n_positions,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "torch_dtype": TORCH_DTYPE[dtype],
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------
# command line

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Write a GPT-2 model with random weights in the Hugging Face layout.")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="shape preset; explicit --n-* / --vocab-size options override it")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--n-embd", type=int)
    p.add_argument("--n-positions", type=int)
    p.add_argument("--vocab-size", type=int, help="default: the tokenizer's vocabulary size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--linear-std", type=float, default=LINEAR_STD,
                   help="std of the attention/MLP Conv1D weights (default %(default)s); "
                        "embeddings and biases keep 0.02")
    p.add_argument("--tokenizer-dir",
                   help="copy vocab.json + merges.txt from here (default: write a byte-level tokenizer)")
    p.add_argument("--dtype", choices=sorted(SAFETENSORS_DTYPE), default="f32")
    p.add_argument("--prefix", dest="prefix", action="store_true", default=True,
                   help="name tensors transformer.* as GPT2LMHeadModel saves them (default)")
    p.add_argument("--no-prefix", dest="prefix", action="store_false",
                   help="name tensors without transformer. (as the hub's gpt2 files do)")
    p.add_argument("--with-lm-head", action="store_true",
                   help="also store lm_head.weight (a copy of wte)")
    p.add_argument("--with-attn-bias", action="store_true",
                   help="also store h.{i}.attn.bias F32 [1,1,P,P] causal-mask buffers")
    args = p.parse_args(argv)

    preset = dict(zip(("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"),
                      PRESETS[args.preset])) if args.preset else DEFAULTS
    for key in DEFAULTS:
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    return args


def check_shape(args, vocab):
    if min(args.n_layer, args.n_head, args.n_embd, args.n_positions) < 1:
        sys.exit("error: --n-layer, --n-head, --n-embd and --n-positions must be positive")
    if args.n_embd % args.n_head:
        sys.exit(f"error: --n-embd {args.n_embd} is not a multiple of --n-head {args.n_head}")
    eos_id = vocab.get(ENDOFTEXT)
    if eos_id is None:
        sys.exit(f"error: the tokenizer has no {ENDOFTEXT} token")
    if args.vocab_size <= eos_id:
        sys.exit(f"error: --vocab-size {args.vocab_size} has no room for the tokenizer's "
                 f"{ENDOFTEXT} id {eos_id}")
    return eos_id


def main(argv):
    args = parse_args(argv)
    vocab = tokenizer_vocab(args.tokenizer_dir)
    if args.vocab_size is None:
        args.vocab_size = len(vocab)
    eos_id = check_shape(args, vocab)

    os.makedirs(args.out, exist_ok=True)
    write_tokenizer(args.out, args.tokenizer_dir, vocab)

    specs = tensor_specs(args.n_layer, args.n_embd, args.n_positions, args.vocab_size,
                         args.with_attn_bias, args.with_lm_head)
    write_safetensors(os.path.join(args.out, "model.safetensors"), args.seed, specs,
                      "transformer." if args.prefix else "", SAFETENSORS_DTYPE[args.dtype],
                      args.linear_std)
    with open(os.path.join(args.out, "config.json"), "w", encoding="utf-8") as f:
        f.write(hf_config(args.n_layer, args.n_head, args.n_embd, args.n_positions,
                          args.vocab_size, eos_id, args.dtype, args.seed))

    print(f"wrote RANDOM-weight GPT-2 model to {args.out} (L={args.n_layer} H={args.n_head} "
          f"C={args.n_embd} P={args.n_positions} V={args.vocab_size} {args.dtype}, seed "
          f"{args.seed}): output is meaningless, for testing only")


if __name__ == "__main__":
    main(sys.argv[1:])
