#!/usr/bin/env python3
"""Write a random-weight GGUF with BitNet-b1.58-2B-4T's shape, for llama.cpp decode benchmarks.

What this is for
----------------
A side-by-side *speed* comparison of llama.cpp's ternary formats (TQ2_0 / TQ1_0)
against this project's kernels, at the model level, on the same CPU.  Only the
tensor shapes matter for decode speed, so the weights are random and the
tokenizer is a stub.  The model produces garbage text; never use it for quality.

Nothing imports this script; llama.cpp and the GGUFs stay outside the repository. Our side of
the comparison is profile/model_decode.py (the same shape as transformers' Llama / BitNet).
Results: profile/results/llamacpp-tq2_0-model-zen4.json.

Dependency note
---------------
The ``gguf`` PyPI package (plus numpy) is OPTIONAL and used only by this script.
Install it into a throw-away venv, not into the project's environment:

    python3 -m venv /tmp/peer/venv && /tmp/peer/venv/bin/pip install gguf numpy

How to run the whole side-by-side (llama.cpp side)
--------------------------------------------------
(Everything lives outside the project repo, under /tmp/peer/.)

 1. llama.cpp source: the project's usual mirror of github:ggml-org/llama.cpp was
    too large to fetch here, so the source came from the PyPI sdist of
    llama-cpp-python, which vendors llama.cpp with its shallow git dir
    (``pip download --no-deps --no-binary :all: llama-cpp-python`` -> untar ->
    copy vendor/llama.cpp, and .git/modules/vendor/llama.cpp as its .git).
    Commit used: 0c1e57098bba43ac29e6e3b677cdceebdd22334f.
 2. Build (CPU only, native ISA):
        cd /tmp/peer/llama.cpp
        cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DCMAKE_BUILD_TYPE=Release
        cmake --build build -j2 --target llama-quantize llama-bench
 3. Make the F16 GGUFs, quantize, delete the F16s:
        /tmp/peer/venv/bin/python profile/peer_llamacpp_gguf.py --vocab 32000  --out /tmp/peer/bitnet2b-v32k-f16.gguf
        build/bin/llama-quantize /tmp/peer/bitnet2b-v32k-f16.gguf /tmp/peer/bitnet2b-v32k-tq2_0.gguf TQ2_0
        (same with --vocab 128256 -> bitnet2b-v128k-*; optionally TQ1_0 as well)
 4. Benchmark (decode only, 64 tokens, 1 and 2 threads, 3 reps), on a quiet machine (a busy
    second core collapses llama.cpp's 2-thread rate), per model:
        build/bin/llama-bench -m MODEL -p 0 -n 64 -t 1,2 -r 3 -o json

Model shape (BitNet-b1.58-2B-4T, as a plain "llama" architecture)
----------------------------------------------------------------
  hidden 2560, FFN 6912, 30 layers, 20 query heads, 5 KV heads (GQA 4),
  head_dim 128, rope theta 500000, RMS-norm eps 1e-5, context 4096,
  untied output head, vocab 32000 or 128256 (the real model uses 128256).
  Differences from real BitNet that llama.cpp's "llama" graph does not have:
  no sub-layer norms (attn_sub_norm / ffn_sub_norm), SwiGLU instead of
  squared-ReLU GLU, no per-tensor activation quant.  These are small
  elementwise ops; the matmul bytes (what dominates decode) are identical.

Weights
-------
  Linear layers (attn_q/k/v/output, ffn_gate/up/down): scale * {-1, 0, +1}
  with scale = 1/sqrt(fan_in * 2/3) (keeps activations O(1)); exactly
  ternary, so TQ2_0/TQ1_0 quantization is lossless.  Since all weights are
  random, llama.cpp's q/k row permutation (convert_hf_to_gguf) is irrelevant.
  token_embd / output: normal(0, 0.02) floats.  Norm weights: 1.0 (F32).
  Linear weights and embeddings are stored F16 (or F32 with --f32).

Tokenizer stub
--------------
  tokenizer.ggml.model = "llama" (SentencePiece-style, the simplest one that
  llama.cpp loads without merges), with a vocabulary of exactly --vocab tokens:
    0 "<unk>" (UNKNOWN), 1 "<s>" (CONTROL, BOS), 2 "</s>" (CONTROL, EOS),
    3..258 "<0x00>".."<0xFF>" (BYTE, so byte fallback and the '\\n' lookup work),
    259.. "\u2581t{i}" (NORMAL, score -i).
  llama-bench feeds random token ids, so the tokenizer only has to load; the
  vocab size is what matters (it sets the output matmul's size).

Memory/disk: tensors are generated and written one at a time (streaming), so
peak RAM is about one tensor (the output head at vocab 128256: ~0.66 GB F16,
a few GB transient); the F16 file is ~4.5 GB (v32k, 2.25 B params) / ~5.5 GB (v128k, 2.74 B).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

try:
    import gguf
except ImportError:  # optional dependency, see docstring
    sys.exit("peer_llamacpp_gguf.py needs the optional 'gguf' package: pip install gguf numpy (in a separate venv)")

# ---- BitNet-b1.58-2B-4T shape ------------------------------------------------
N_EMBD = 2560
N_FF = 6912
N_LAYER = 30
N_HEAD = 20
N_HEAD_KV = 5
HEAD_DIM = 128  # = N_EMBD // N_HEAD
ROPE_THETA = 500000.0
RMS_EPS = 1e-5
N_CTX = 4096

# GGUF token types (llama.cpp enum llama_token_type / gguf.TokenType)
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_BYTE = 1, 2, 3, 6


def tensor_plan(n_vocab: int):
    """(name, numpy shape, kind) in file order. numpy shape is (rows=out, cols=in);
    GGUF stores ne reversed, i.e. ne0 = in-features, as llama.cpp expects."""
    kv = N_HEAD_KV * HEAD_DIM
    plan = [("token_embd.weight", (n_vocab, N_EMBD), "embed")]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (N_EMBD,), "norm"),
            (p + "attn_q.weight", (N_HEAD * HEAD_DIM, N_EMBD), "tern"),
            (p + "attn_k.weight", (kv, N_EMBD), "tern"),
            (p + "attn_v.weight", (kv, N_EMBD), "tern"),
            (p + "attn_output.weight", (N_EMBD, N_HEAD * HEAD_DIM), "tern"),
            (p + "ffn_norm.weight", (N_EMBD,), "norm"),
            (p + "ffn_gate.weight", (N_FF, N_EMBD), "tern"),
            (p + "ffn_up.weight", (N_FF, N_EMBD), "tern"),
            (p + "ffn_down.weight", (N_EMBD, N_FF), "tern"),
        ]
    plan += [
        ("output_norm.weight", (N_EMBD,), "norm"),
        ("output.weight", (n_vocab, N_EMBD), "embed"),  # untied head
    ]
    return plan


def make_tensor(rng: np.random.Generator, shape, kind: str, fdtype):
    if kind == "norm":
        return np.ones(shape, dtype=np.float32)  # 1-D norms stay F32 (llama.cpp convention)
    if kind == "embed":
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(fdtype)
    # ternary linear weight: scale * {-1,0,1}
    fan_in = shape[1]
    scale = 1.0 / np.sqrt(fan_in * 2.0 / 3.0)
    q = rng.integers(-1, 2, size=shape, dtype=np.int8)
    return q.astype(fdtype) * fdtype(scale)


def add_tokenizer(w: "gguf.GGUFWriter", n_vocab: int) -> None:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL] + [TT_BYTE] * 256
    n_special = len(tokens)
    assert n_vocab > n_special
    tokens += [f"\u2581t{i}" for i in range(n_vocab - n_special)]
    types += [TT_NORMAL] * (n_vocab - n_special)
    scores = [0.0] * n_special + [-float(i) for i in range(n_vocab - n_special)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=32000, help="vocab size (32000 or 128256)")
    ap.add_argument("--out", required=True, help="output .gguf path")
    ap.add_argument("--f32", action="store_true", help="store linear/embedding tensors as F32 (2x size)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    fdtype = np.float32 if args.f32 else np.float16
    rng = np.random.default_rng(args.seed)
    arch = "llama"
    w = gguf.GGUFWriter(args.out, arch)

    # ---- hyper-parameters (keys: llama.<key>) ----
    w.add_name(f"random-bitnet-2b-shape-v{args.vocab}")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(args.vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if args.f32 else gguf.LlamaFileType.MOSTLY_F16)
    add_tokenizer(w, args.vocab)

    # ---- tensor infos first, then stream data one tensor at a time ----
    plan = tensor_plan(args.vocab)
    for name, shape, kind in plan:
        dt = np.dtype(np.float32) if kind == "norm" else np.dtype(fdtype)
        w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0 = time.time()
    n_params = 0
    for k, (name, shape, kind) in enumerate(plan):
        t = make_tensor(rng, shape, kind, fdtype)
        n_params += t.size
        w.write_tensor_data(t)
        del t
        if k % 45 == 0:
            print(f"  [{k + 1}/{len(plan)}] {name} {shape} ({time.time() - t0:.0f}s)", flush=True)
    w.close()
    print(f"wrote {args.out}: {len(plan)} tensors, {n_params / 1e9:.3f} B params, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
