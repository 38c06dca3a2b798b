#!/usr/bin/env python3
"""Writes a Llama checkpoint (config.json + model.safetensors, e.g. from make_random_llama.py)
as a GGUF file (version 3) that llama.cpp loads, so both engines can be timed on the same
weights.

usage: safetensors_to_gguf.py CHECKPOINT_DIR OUT.gguf [--type f32|f16]

Matrices are stored as F32 or F16 (--type); norm weights always as F32, as llama.cpp's own
converter does. Q and K rows are permuted from the Hugging Face rotate-half layout to the
interleaved-pair layout llama.cpp's "llama" architecture expects. The vocabulary is a
synthetic SentencePiece-style one of the checkpoint's size (<unk>, <s>, </s>, the 256 byte
tokens, then unique word pieces): the benchmark feeds token ids, never text.
Only numpy is needed.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32
# Metadata value types.
T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY = 4, 5, 6, 7, 8, 9
# ggml tensor types.
GGML_F32, GGML_F16 = 0, 1


def read_safetensors(path):
    """{name: float32 ndarray} from a safetensors file with F32, F16 or BF16 tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            f.seek(base + b)
            raw = f.read(e - b)
            dt = info["dtype"]
            if dt == "F32":
                a = np.frombuffer(raw, dtype="<f4")
            elif dt == "F16":
                a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
            elif dt == "BF16":
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                sys.exit(f"{path}: tensor {name} has dtype {dt}; only F32, F16 and BF16 are supported")
            out[name] = a.reshape(info["shape"])
    return out


class Writer:
    def __init__(self):
        self.kv = []       # encoded key/value pairs
        self.tensors = []  # (name, ndarray, ggml type)

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def add(self, key, vtype, value):
        enc = self._str(key) + struct.pack("<I", vtype)
        if vtype == T_STRING:
            enc += self._str(value)
        elif vtype == T_UINT32:
            enc += struct.pack("<I", value)
        elif vtype == T_INT32:
            enc += struct.pack("<i", value)
        elif vtype == T_FLOAT32:
            enc += struct.pack("<f", value)
        elif vtype == T_BOOL:
            enc += struct.pack("<B", 1 if value else 0)
        else:
            raise ValueError(vtype)
        self.kv.append(enc)

    def add_array(self, key, etype, values):
        enc = self._str(key) + struct.pack("<IIQ", T_ARRAY, etype, len(values))
        if etype == T_STRING:
            enc += b"".join(self._str(v) for v in values)
        elif etype == T_FLOAT32:
            enc += np.asarray(values, dtype="<f4").tobytes()
        elif etype == T_INT32:
            enc += np.asarray(values, dtype="<i4").tobytes()
        else:
            raise ValueError(etype)
        self.kv.append(enc)

    def add_tensor(self, name, a, gtype):
        a = np.ascontiguousarray(a.astype("<f2" if gtype == GGML_F16 else "<f4"))
        self.tensors.append((name, a, gtype))

    def write(self, path):
        infos = b""
        offset = 0
        offsets = []
        for name, a, gtype in self.tensors:
            offsets.append(offset)
            dims = list(reversed(a.shape))  # ne[0] is the contiguous (last numpy) dimension
            infos += self._str(name) + struct.pack("<I", len(dims))
            infos += b"".join(struct.pack("<Q", d) for d in dims)
            infos += struct.pack("<IQ", gtype, offset)
            offset += (a.nbytes + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
        head = GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))
        head += b"".join(self.kv) + infos
        with open(path, "wb") as f:
            f.write(head)
            f.write(b"\0" * ((-len(head)) % ALIGNMENT))
            for (name, a, _), off in zip(self.tensors, offsets):
                f.write(a.tobytes())
                f.write(b"\0" * ((-a.nbytes) % ALIGNMENT))


def permute_rope(w, n_head):
    """Hugging Face rotate-half rows → llama.cpp interleaved pairs, per head."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def synthetic_vocab(n):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE
    i = 0
    while len(tokens) < n:
        tokens.append(f"\u2581t{i}")
        types.append(1)  # NORMAL
        i += 1
    tokens, types = tokens[:n], types[:n]
    scores = [0.0] * 3 + [0.0] * 256 + [-float(j) for j in range(n - 259)] if n > 259 else [0.0] * n
    return tokens, scores[:n], types


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--type", choices=["f32", "f16"], default="f16")
    a = ap.parse_args()
    with open(os.path.join(a.checkpoint, "config.json")) as f:
        cfg = json.load(f)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "vocab_size", "rms_norm_eps"):
        if key not in cfg:
            sys.exit(f"{a.checkpoint}/config.json: missing field '{key}'")
    if cfg.get("model_type") != "llama":
        sys.exit(f"{a.checkpoint}/config.json: model_type must be 'llama', got {cfg.get('model_type')!r}")
    h, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", h // nh)
    vocab = cfg["vocab_size"]
    wt = read_safetensors(os.path.join(a.checkpoint, "model.safetensors"))
    for name, t in wt.items():
        if not np.isfinite(t).all():
            sys.exit(f"{name}: non-finite values")
    mtype = GGML_F16 if a.type == "f16" else GGML_F32

    w = Writer()
    w.add("general.architecture", T_STRING, "llama")
    w.add("general.name", T_STRING, os.path.basename(os.path.abspath(a.checkpoint)))
    w.add("general.file_type", T_UINT32, 1 if a.type == "f16" else 0)
    w.add("general.alignment", T_UINT32, ALIGNMENT)
    w.add("llama.context_length", T_UINT32, cfg.get("max_position_embeddings", 2048))
    w.add("llama.embedding_length", T_UINT32, h)
    w.add("llama.block_count", T_UINT32, L)
    w.add("llama.feed_forward_length", T_UINT32, cfg["intermediate_size"])
    w.add("llama.rope.dimension_count", T_UINT32, hd)
    w.add("llama.attention.head_count", T_UINT32, nh)
    w.add("llama.attention.head_count_kv", T_UINT32, nkv)
    w.add("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, cfg["rms_norm_eps"])
    w.add("llama.rope.freq_base", T_FLOAT32, cfg.get("rope_theta", 10000.0))
    w.add("llama.vocab_size", T_UINT32, vocab)
    tokens, scores, types = synthetic_vocab(vocab)
    w.add("tokenizer.ggml.model", T_STRING, "llama")
    w.add_array("tokenizer.ggml.tokens", T_STRING, tokens)
    w.add_array("tokenizer.ggml.scores", T_FLOAT32, scores)
    w.add_array("tokenizer.ggml.token_type", T_INT32, types)
    w.add("tokenizer.ggml.unknown_token_id", T_UINT32, 0)
    w.add("tokenizer.ggml.bos_token_id", T_UINT32, 1)
    w.add("tokenizer.ggml.eos_token_id", T_UINT32, 2)
    w.add("tokenizer.ggml.add_bos_token", T_BOOL, False)

    def get(name):
        if name not in wt:
            sys.exit(f"{a.checkpoint}/model.safetensors: missing tensor '{name}'")
        return wt[name]

    w.add_tensor("token_embd.weight", get("model.embed_tokens.weight"), mtype)
    w.add_tensor("output_norm.weight", get("model.norm.weight"), GGML_F32)
    if not cfg.get("tie_word_embeddings", False):
        w.add_tensor("output.weight", get("lm_head.weight"), mtype)
    for l in range(L):
        p = f"model.layers.{l}."
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", get(p + "input_layernorm.weight"), GGML_F32)
        w.add_tensor(b + "attn_q.weight", permute_rope(get(p + "self_attn.q_proj.weight"), nh), mtype)
        w.add_tensor(b + "attn_k.weight", permute_rope(get(p + "self_attn.k_proj.weight"), nkv), mtype)
        w.add_tensor(b + "attn_v.weight", get(p + "self_attn.v_proj.weight"), mtype)
        w.add_tensor(b + "attn_output.weight", get(p + "self_attn.o_proj.weight"), mtype)
        w.add_tensor(b + "ffn_norm.weight", get(p + "post_attention_layernorm.weight"), GGML_F32)
        w.add_tensor(b + "ffn_gate.weight", get(p + "mlp.gate_proj.weight"), mtype)
        w.add_tensor(b + "ffn_up.weight", get(p + "mlp.up_proj.weight"), mtype)
        w.add_tensor(b + "ffn_down.weight", get(p + "mlp.down_proj.weight"), mtype)
    w.write(a.out)
    print(f"wrote {a.out} ({a.type}, {len(w.tensors)} tensors, {os.path.getsize(a.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
