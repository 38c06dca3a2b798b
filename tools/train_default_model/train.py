#!/usr/bin/python3
"""Trains Iris's small embedded default model (models/iris-tiny) from scratch on the CPU.

Everything happens here, offline and deterministically (fixed seeds, one thread):
  1. read the English `fortunes` cookie files (Debian package `fortunes`, BSD licence) and
     render a few hundred synthetic chat exchanges through the Llama-3 chat template;
  2. train a byte-level BPE tokenizer (256 byte tokens + merges + 5 special tokens) and
     write it in Hugging Face `tokenizers` format (tokenizer.json, tokenizer_config.json);
  3. train a tiny Llama (RMSNorm, rotate-half RoPE, GQA attention, SiLU-gated MLP) with
     exactly the computation transformers' LlamaForCausalLM performs;
  4. write config.json, generation_config.json and model.safetensors (BF16, written by
     hand), then parse the safetensors file back and greedy-generate from a few prompts
     with its own forward pass.

Run with Debian's Python (python3-torch 1.13, numpy):
    /usr/bin/python3 tools/train_default_model/train.py --out models/iris-tiny
The text comes from /usr/share/games/fortunes (apt-get install fortunes), or from any
directory given with --fortunes-dir (e.g. `apt-get download fortunes && dpkg-deb -x
fortunes_*.deb x` and --fortunes-dir x/usr/share/games/fortunes).
"""
import argparse
import collections
import heapq
import json
import math
import os
import random
import re
import struct
import sys
import time
import unicodedata

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
BOS, EOT_TEXT, SH, EH, EOT = SPECIALS

# The pre-tokenizer pattern of GPT-4 / Llama 3, written into tokenizer.json verbatim.
HF_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Python's `re` has no \p{..}: \p{L} ~ [^\W\d_] (letters), \p{N} ~ \d. Close enough for
# the mostly-ASCII training text; the C++ tokenizer applies the exact rule at run time.
_L = r"[^\W\d_]"
_N = r"\d"
_NOT_LN_CRLF = r"(?:[^\r\n\w]|_)"      # [^\r\n\p{L}\p{N}]
_NOT_S_LN = r"(?:[^\s\w]|_)"           # [^\s\p{L}\p{N}]
PY_SPLIT_REGEX = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|" + _NOT_LN_CRLF + r"?" + _L + r"+|" + _N + r"{1,3}|"
    r" ?" + _NOT_S_LN + r"+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}")

# Cookie files used. Left out: ones that are mostly pictures (art, ascii-art), nonsense
# (zippy), code (perl), boilerplate (disclaimer, translate-me), or whose jokes lean on
# stereotypes (ethnic, men-women), drugs (drugs) or party politics (politics) -- unsuitable
# for a default model's replies.
FORTUNE_FILES = [
    "cookie", "fortunes", "wisdom", "literature", "people", "humorists", "science",
    "education", "kids", "food", "love", "work", "pets", "platitudes", "riddles",
    "songs-poems", "tao", "sports", "magic", "miscellaneous", "computers", "definitions",
    "law", "medicine", "goedel", "paradoxum", "startrek", "news", "linux", "linuxcookie",
    "debian", "knghtbrd", "pratchett",
]
POEM_FILES = {"songs-poems", "tao"}


# ----------------------------------------------------------------------------- text

def clean_fortune(text, keep_lines):
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)          # ANSI escapes
    while "\b" in text:                                          # overstrike x\bx / _\bx
        new = re.sub(r".\x08", "", text)
        if new == text:
            text = text.replace("\b", "")
            break
        text = new
    text = text.replace("\t", " ").replace("\r", "")
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c)[0] != "C")
    lines = [ln.strip() for ln in text.split("\n")]
    out, para = [], []

    def flush():
        if para:
            out.append(" ".join(para))
            para.clear()

    for ln in lines:
        if not ln:
            flush()
            if out and out[-1] != "":
                out.append("")
            continue
        starts_new = (keep_lines or ln.startswith("--") or ln.startswith("- ")
                      or re.match(r"^[A-Z][A-Za-z .']{0,20}:\s", ln) is not None)
        if starts_new:
            flush()
        para.append(ln)
        if keep_lines:
            flush()
    flush()
    while out and out[-1] == "":
        out.pop()
    text = "\n".join(out)
    text = re.sub(r" {2,}", " ", text)
    return text.strip()


def looks_like_prose(text):
    if len(text) < 20 or len(text) > 1200:
        return False
    letters = sum(c.isalpha() for c in text)
    spaces = text.count(" ")
    if letters / len(text) < 0.7 and (letters + spaces) / len(text) < 0.85:
        return False
    if re.search(r"[|/\\_=#*~<>{}]{3,}", text):                  # drawings, code
        return False
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return False
    return True


def load_fortunes(directory):
    docs = {}
    for name in FORTUNE_FILES:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            print(f"warning: {path} missing, skipped", file=sys.stderr)
            continue
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8", errors="replace")
        items = []
        for chunk in re.split(r"\n%\n", "\n" + raw + "\n"):
            t = clean_fortune(chunk, name in POEM_FILES)
            if looks_like_prose(t):
                items.append(t)
        docs[name] = items
    return docs


# ------------------------------------------------------------------ synthetic chats

def synthetic_chats(fortunes, rng, n_target):
    """A few hundred short user/assistant exchanges (list of message lists)."""
    hello_u = ["Hello", "Hello!", "Hi", "Hi!", "Hi there", "Hi there!", "Hey", "Hey!",
               "hello", "hi", "hey there", "Good morning", "Good morning!",
               "Good evening", "Good afternoon", "Greetings", "Hello there", "Howdy",
               "Hello, who are you?", "Hi, how are you?"]
    hello_a = ["Hello! How can I help you today?", "Hi there! What can I do for you?",
               "Hello! It is nice to meet you. How can I help?",
               "Hi! What would you like to talk about?", "Hello! How are you today?",
               "Hey! How can I help you?", "Good day to you! What can I do for you?"]
    how_u = ["How are you?", "How are you doing?", "How are you today?", "How's it going?",
             "how are you", "Are you well?", "How do you feel?"]
    how_a = ["I am doing well, thank you for asking. How are you?",
             "I am fine, thanks! How can I help you today?",
             "Very well, thank you. What is on your mind?",
             "I am well. I hope you are having a good day too."]
    who_u = ["Who are you?", "What is your name?", "What are you?", "Tell me about yourself.",
             "What's your name?", "Introduce yourself.", "Are you a robot?"]
    who_a = ["I am Iris, a very small language model. I can chat a little and share a "
             "saying or two.",
             "My name is Iris. I am a tiny language model that runs inside this server.",
             "I am Iris, a small demo model. I know many old sayings, but not much else.",
             "I am a small language model called Iris. Ask me for a quote or a joke!"]
    can_u = ["What can you do?", "Can you help me?", "Help", "I need help.",
             "What do you know?", "What are you good at?"]
    can_a = ["I can chat a little, tell a joke, or share a wise saying. I am only a small "
             "model, so please do not trust me with anything important.",
             "I will do my best! I am a tiny model, so I am best at short quotes and "
             "friendly chat.",
             "Sure. Ask me a question, or ask for a quote, and I will try."]
    thanks_u = ["Thank you", "Thanks!", "Thank you very much.", "thanks", "Thanks a lot!",
                "Great, thanks."]
    thanks_a = ["You are welcome!", "You're welcome! Anything else?",
                "Glad I could help.", "My pleasure. Have a nice day!"]
    bye_u = ["Goodbye", "Bye!", "Bye", "See you later.", "Good night", "I have to go now.",
             "Talk to you later."]
    bye_a = ["Goodbye! Have a wonderful day.", "Bye! Take care.",
             "See you later! It was nice talking to you.", "Good night, and sleep well."]
    quote_u = ["Tell me something wise.", "Give me a quote.", "Tell me a fortune.",
               "Say something interesting.", "Share a saying with me.",
               "Tell me something.", "Give me some advice.", "Tell me a joke.",
               "Make me laugh.", "Do you know a good quote?", "Inspire me.",
               "What is the meaning of life?", "Tell me a story."]
    quote_a_pre = ["Here is one: ", "Here is a saying I like: ", "How about this: ",
                   "Sure. ", "", "", "Here you go: "]
    weather_u = ["What is the weather like?", "Is it going to rain?",
                 "What time is it?", "What day is it today?"]
    weather_a = ["I am sorry, I cannot see the world outside, so I do not know. "
                 "Maybe look out of the window?",
                 "I do not know; I have no clock or window. But I hope it is a nice one!"]
    fact_pairs = [
        ("What color is the sky?", "On a clear day the sky is blue."),
        ("What is two plus two?", "Two plus two is four."),
        ("What is the capital of France?", "The capital of France is Paris."),
        ("How many days are in a week?", "There are seven days in a week."),
        ("What do cats eat?", "Cats mostly eat meat and fish, and they like milk too."),
        ("What is the sun?", "The sun is the star at the center of our solar system."),
        ("Do you like books?", "Yes! I learned everything I know from reading."),
        ("What is love?", "Love is caring deeply for someone, even when it is hard."),
        ("Why is the sea salty?", "Rivers carry salt from rocks into the sea, and the "
         "salt stays behind when the water evaporates."),
        ("What is a computer?", "A computer is a machine that follows instructions to "
         "work with numbers, words and pictures."),
    ]
    short_quotes = [q for name in ("wisdom", "fortunes", "cookie", "people", "humorists",
                                   "literature", "work", "love", "kids", "education",
                                   "platitudes")
                    for q in fortunes.get(name, []) if len(q) < 220 and "\n\n" not in q]
    short_quotes.sort()
    systems = ["You are a helpful assistant.", "You are Iris, a friendly assistant.",
               "You are a helpful, concise assistant."]

    singles = [(hello_u, hello_a, 2), (how_u, how_a, 1), (who_u, who_a, 2),
               (can_u, can_a, 1), (thanks_u, thanks_a, 1.5), (bye_u, bye_a, 1.5),
               (weather_u, weather_a, 1)]
    chats = []
    while len(chats) < n_target:
        r = rng.random()
        if r < 0.45:
            total = sum(w for *_, w in singles)
            pick = rng.random() * total
            for us, as_, w in singles:
                pick -= w
                if pick <= 0:
                    break
            msgs = [("user", rng.choice(us)), ("assistant", rng.choice(as_))]
        elif r < 0.80 and short_quotes:
            msgs = [("user", rng.choice(quote_u)),
                    ("assistant", rng.choice(quote_a_pre) + rng.choice(short_quotes))]
        elif r < 0.90:
            q, a = rng.choice(fact_pairs)
            msgs = [("user", q), ("assistant", a)]
        else:   # two turns: greeting, then a request
            msgs = [("user", rng.choice(hello_u)), ("assistant", rng.choice(hello_a)),
                    ("user", rng.choice(quote_u)),
                    ("assistant", rng.choice(quote_a_pre) + rng.choice(short_quotes))]
        if rng.random() < 0.2:
            msgs = [("system", rng.choice(systems))] + msgs
        chats.append(msgs)
    return chats


def render_chat(msgs, add_generation_prompt=False):
    """Python rendering of CHAT_TEMPLATE (identical output)."""
    out = []
    for i, (role, content) in enumerate(msgs):
        s = SH + role + EH + "\n\n" + content.strip() + EOT
        if i == 0:
            s = BOS + s
        out.append(s)
    if add_generation_prompt:
        out.append(SH + "assistant" + EH + "\n\n")
    return "".join(out)


# ------------------------------------------------------------------------ tokenizer

def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


BYTE_ORDER, BYTE_CHARS = bytes_to_unicode()
BYTE_ENCODER = dict(zip(BYTE_ORDER, BYTE_CHARS))
SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def pretokenize(text):
    return PY_SPLIT_REGEX.findall(text)


def train_bpe(word_counts, n_merges):
    """Classic byte-pair encoding with incremental pair counts.

    word_counts: {bytes: count}. Returns the list of merges as (bytes_a, bytes_b).
    Ties are broken by the byte strings, so the result is deterministic.
    """
    keys = sorted(word_counts)
    words = [[bytes([b]) for b in w] for w in keys]      # symbols are bytes objects
    counts = [word_counts[w] for w in keys]
    pair_count = collections.Counter()
    pair_where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_count[(a, b)] += counts[i]
            pair_where[(a, b)].add(i)

    # max-heap on (count, then smallest pair): store (-count, a, b)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        negc, a, b = heapq.heappop(heap)
        cur = pair_count.get((a, b), 0)
        if cur != -negc:
            if cur > 0:
                heapq.heappush(heap, (-cur, a, b))
            continue
        if cur < 2:
            break
        merges.append((a, b))
        ab = a + b
        touched = collections.Counter()
        for i in sorted(pair_where.pop((a, b), ())):
            w, c = words[i], counts[i]
            if len(w) < 2:
                continue
            for x, y in zip(w, w[1:]):                       # remove old pairs
                pair_count[(x, y)] -= c
                touched[(x, y)] += 0
            nw, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    nw.append(ab)
                    j += 2
                else:
                    nw.append(w[j])
                    j += 1
            words[i] = nw
            for x, y in zip(nw, nw[1:]):                     # add new pairs
                pair_count[(x, y)] += c
                pair_where[(x, y)].add(i)
                touched[(x, y)] += 0
        pair_count.pop((a, b), None)
        for p in touched:
            c = pair_count.get(p, 0)
            if c <= 0:
                pair_count.pop(p, None)
            elif p != (a, b):
                heapq.heappush(heap, (-c, p[0], p[1]))
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.merges = merges
        self.rank = {m: i for i, m in enumerate(merges)}
        self.id_of = {}
        for i, b in enumerate(BYTE_ORDER):
            self.id_of[bytes([b])] = i
        for a, b in merges:
            self.id_of[a + b] = len(self.id_of)
        self.n_bpe = len(self.id_of)
        self.special_id = {s: self.n_bpe + i for i, s in enumerate(SPECIALS)}
        self.bytes_of = {i: b for b, i in self.id_of.items()}
        self.vocab_size = self.n_bpe + len(SPECIALS)
        self.cache = {}

    @staticmethod
    def token_str(b):
        return "".join(BYTE_ENCODER[x] for x in b)

    def encode_word(self, word):
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        syms = [bytes([x]) for x in word]
        while len(syms) > 1:
            best, best_rank = None, None
            for k in range(len(syms) - 1):
                r = self.rank.get((syms[k], syms[k + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = k, r
            if best is None:
                break
            pair = (syms[best], syms[best + 1])
            out, k = [], 0
            while k < len(syms):
                if k + 1 < len(syms) and (syms[k], syms[k + 1]) == pair:
                    out.append(syms[k] + syms[k + 1])
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            syms = out
        ids = [self.id_of[s] for s in syms]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        """Encodes text; special-token strings become their ids (like HF added tokens)."""
        ids = []
        for part in SPECIAL_SPLIT.split(text):
            if not part:
                continue
            if part in self.special_id:
                ids.append(self.special_id[part])
                continue
            for w in pretokenize(part):
                ids.extend(self.encode_word(w.encode("utf-8")))
        return ids

    def decode(self, ids, skip_special=False):
        out, buf = [], b""
        for i in ids:
            if i >= self.n_bpe:
                out.append(buf.decode("utf-8", errors="replace"))
                buf = b""
                if not skip_special:
                    out.append(SPECIALS[i - self.n_bpe])
            else:
                buf += self.bytes_of[i]
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_hf_json(self):
        vocab = {self.token_str(b): i for b, i in sorted(self.id_of.items(), key=lambda t: t[1])}
        merges = [self.token_str(a) + " " + self.token_str(b) for a, b in self.merges]
        added = [{"id": self.special_id[s], "content": s, "single_word": False,
                  "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                 for s in SPECIALS]
        bos_id = self.special_id[BOS]
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": HF_SPLIT_REGEX},
                 "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": False}]},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": BOS, "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}}},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": merges},
        }

    def tokenizer_config(self, max_len):
        return {
            "added_tokens_decoder": {
                str(self.special_id[s]): {"content": s, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False,
                                          "special": True} for s in SPECIALS},
            "bos_token": BOS,
            "eos_token": EOT,
            "pad_token": EOT_TEXT,
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": max_len,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
        }


# ---------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.hd = h // nh
        self.nh, self.nkv = nh, nkv
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], h)
        self.layers = nn.ModuleList()
        for _ in range(cfg["num_hidden_layers"]):
            layer = nn.Module()
            layer.input_layernorm = RMSNorm(h, cfg["rms_norm_eps"])
            layer.post_attention_layernorm = RMSNorm(h, cfg["rms_norm_eps"])
            attn = nn.Module()
            attn.q_proj = nn.Linear(h, nh * self.hd, bias=False)
            attn.k_proj = nn.Linear(h, nkv * self.hd, bias=False)
            attn.v_proj = nn.Linear(h, nkv * self.hd, bias=False)
            attn.o_proj = nn.Linear(nh * self.hd, h, bias=False)
            mlp = nn.Module()
            mlp.gate_proj = nn.Linear(h, cfg["intermediate_size"], bias=False)
            mlp.up_proj = nn.Linear(h, cfg["intermediate_size"], bias=False)
            mlp.down_proj = nn.Linear(cfg["intermediate_size"], h, bias=False)
            layer.self_attn, layer.mlp = attn, mlp
            self.layers.append(layer)
        self.norm = RMSNorm(h, cfg["rms_norm_eps"])
        if not cfg["tie_word_embeddings"]:
            self.lm_head = nn.Linear(h, cfg["vocab_size"], bias=False)
        inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, self.hd, 2).float() / self.hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def init_weights(self, seed):
        g = torch.Generator().manual_seed(seed)
        n_layers = self.cfg["num_hidden_layers"]
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                continue
            std = 0.02
            if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                std = 0.02 / math.sqrt(2 * n_layers)
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * std)

    def state_dict_hf(self):
        sd = {"model.embed_tokens.weight": self.embed_tokens.weight}
        for i, l in enumerate(self.layers):
            p = f"model.layers.{i}."
            sd[p + "input_layernorm.weight"] = l.input_layernorm.weight
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                sd[p + f"self_attn.{n}.weight"] = getattr(l.self_attn, n).weight
            sd[p + "post_attention_layernorm.weight"] = l.post_attention_layernorm.weight
            for n in ("gate_proj", "up_proj", "down_proj"):
                sd[p + f"mlp.{n}.weight"] = getattr(l.mlp, n).weight
        sd["model.norm.weight"] = self.norm.weight
        if not self.cfg["tie_word_embeddings"]:
            sd["lm_head.weight"] = self.lm_head.weight
        return sd

    def load_hf(self, tensors):
        own = self.state_dict_hf()
        assert set(own) == set(tensors), (set(own) ^ set(tensors))
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(tensors[k].to(p.dtype))

    def forward(self, ids):
        B, T = ids.shape
        x = self.embed_tokens(ids)
        pos = torch.arange(T, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((T, T), float("-inf")).triu(1)
        rep = self.nh // self.nkv
        for l in self.layers:
            hN = l.input_layernorm(x)
            a = l.self_attn
            q = a.q_proj(hN).view(B, T, self.nh, self.hd).transpose(1, 2)
            k = a.k_proj(hN).view(B, T, self.nkv, self.hd).transpose(1, 2)
            v = a.v_proj(hN).view(B, T, self.nkv, self.hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
            att = att.softmax(-1)
            o = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
            x = x + a.o_proj(o)
            hN = l.post_attention_layernorm(x)
            m = l.mlp
            x = x + m.down_proj(F.silu(m.gate_proj(hN)) * m.up_proj(hN))
        x = self.norm(x)
        w = self.embed_tokens.weight if self.cfg["tie_word_embeddings"] else self.lm_head.weight
        return x @ w.t()


# ---------------------------------------------------------------------- safetensors

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy()
        data = data.astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", info
        s, e = info["data_offsets"]
        bits = np.frombuffer(raw[base + s:base + e], dtype="<u2").astype(np.uint32) << 16
        out[name] = torch.from_numpy(bits.view(np.float32).copy()).reshape(info["shape"])
    return out


# ------------------------------------------------------------------------- training

def build_dataset(tok, fortunes, chats, chat_repeat, rng):
    """Token stream of documents; each fortune is BOS + text + <|end_of_text|>."""
    docs = []
    for name in sorted(fortunes):
        for t in fortunes[name]:
            docs.append([tok.special_id[BOS]] + tok.encode(t) + [tok.special_id[EOT_TEXT]])
    n_text_docs = len(docs)
    chat_docs = [tok.encode(render_chat(m)) for m in chats]
    for _ in range(chat_repeat):
        docs.extend(chat_docs)
    rng.shuffle(docs)
    stream = [i for d in docs for i in d]
    n_chat_tok = sum(len(d) for d in chat_docs) * chat_repeat
    return np.array(stream, dtype=np.int64), n_text_docs, n_chat_tok


@torch.no_grad()
def greedy(model, ids, max_new, stop_ids):
    out = list(ids)
    for _ in range(max_new):
        ctx = out[-model.cfg["max_position_embeddings"]:]
        logits = model(torch.tensor([ctx]))[0, -1]
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        if nxt in stop_ids:
            break
    return out[len(ids):]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/iris-tiny")
    ap.add_argument("--fortunes-dir", default="/usr/share/games/fortunes")
    ap.add_argument("--vocab", type=int, default=2048, help="total vocabulary incl. specials")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=352)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--chats", type=int, default=400)
    ap.add_argument("--chat-repeat", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    np.random.seed(a.seed)
    os.makedirs(a.out, exist_ok=True)

    # ---- data
    fortunes = load_fortunes(a.fortunes_dir)
    n_fort = sum(len(v) for v in fortunes.values())
    n_chars = sum(len(t) for v in fortunes.values() for t in v)
    if n_fort == 0:
        sys.exit(f"no fortune files found in {a.fortunes_dir} (apt-get install fortunes)")
    chats = synthetic_chats(fortunes, rng, a.chats)
    print(f"[data] {n_fort} fortunes ({n_chars / 1e6:.2f} M chars) from "
          f"{len(fortunes)} files; {len(chats)} synthetic chats", flush=True)

    # ---- tokenizer
    counts = collections.Counter()
    for v in fortunes.values():
        for t in v:
            counts.update(w.encode("utf-8") for w in pretokenize(t))
    for m in chats:
        for part in SPECIAL_SPLIT.split(render_chat(m)):
            if part and part not in SPECIALS:
                counts.update(w.encode("utf-8") for w in pretokenize(part))
    n_merges = a.vocab - 256 - len(SPECIALS)
    merges = train_bpe(counts, n_merges)
    tok = Tokenizer(merges)
    assert tok.vocab_size == a.vocab, (tok.vocab_size, a.vocab)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok.to_hf_json(), f, ensure_ascii=False, indent=1)
    cfg_max = 512
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok.tokenizer_config(cfg_max), f, ensure_ascii=False, indent=2)
    print(f"[tok] {len(merges)} merges, vocab {tok.vocab_size}, specials "
          f"{tok.special_id} ({time.time() - t0:.1f}s)", flush=True)

    # ---- dataset
    stream, n_docs, n_chat_tok = build_dataset(tok, fortunes, chats, a.chat_repeat, rng)
    print(f"[data] {len(stream)} tokens ({n_chars / len(stream):.2f} chars/token), "
          f"chat tokens {n_chat_tok} ({100 * n_chat_tok / len(stream):.1f}%)", flush=True)

    # ---- model
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": tok.vocab_size, "hidden_size": a.hidden,
        "intermediate_size": a.intermediate, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
        "head_dim": a.hidden // a.heads, "hidden_act": "silu",
        "max_position_embeddings": cfg_max, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "rope_scaling": None, "attention_bias": False, "attention_dropout": 0.0,
        "mlp_bias": False, "initializer_range": 0.02, "pretraining_tp": 1,
        "tie_word_embeddings": True, "use_cache": True, "torch_dtype": "bfloat16",
        "bos_token_id": tok.special_id[BOS],
        "eos_token_id": [tok.special_id[EOT_TEXT], tok.special_id[EOT]],
        "transformers_version": "4.44.0",
    }
    model = Llama(cfg)
    model.init_weights(a.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[model] {n_params} parameters ({n_params / 1e6:.2f} M)", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    warm = max(1, a.steps // 30)

    def lr_at(s):
        if s < warm:
            return a.lr * (s + 1) / warm
        p = (s - warm) / max(1, a.steps - warm)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    data = torch.from_numpy(stream)
    n_windows = (len(stream) - 1) // a.seq
    order = []
    gen = torch.Generator().manual_seed(a.seed)
    t_train = time.time()
    ema = None
    model.train()
    for step in range(a.steps):
        if len(order) < a.batch:
            offset = int(torch.randint(0, a.seq, (1,), generator=gen))
            starts = (torch.randperm(n_windows - 1, generator=gen) * a.seq + offset).tolist()
            order.extend(starts)
        starts = order[:a.batch]
        del order[:a.batch]
        idx = torch.tensor(starts)[:, None] + torch.arange(a.seq + 1)[None]
        chunk = data[idx]
        x, y = chunk[:, :-1], chunk[:, 1:]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == a.steps - 1:
            el = time.time() - t_train
            print(f"[train] step {step}/{a.steps} loss {loss.item():.3f} ema {ema:.3f} "
                  f"lr {lr_at(step):.2e} {el:.0f}s "
                  f"({(step + 1) * a.batch * a.seq / max(el, 1e-9):.0f} tok/s)", flush=True)
    train_s = time.time() - t_train
    epochs = a.steps * a.batch * a.seq / len(stream)
    print(f"[train] done: {train_s:.0f}s, {epochs:.2f} epochs, final ema loss {ema:.3f}",
          flush=True)

    # ---- write checkpoint
    st_path = os.path.join(a.out, "model.safetensors")
    write_safetensors(st_path, model.state_dict_hf())
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                   "do_sample": True, "temperature": 0.7, "top_p": 0.9,
                   "transformers_version": "4.44.0"}, f, indent=2)

    # ---- verify: reload from the file, evaluate, generate
    fresh = Llama(cfg)
    fresh.load_hf(read_safetensors(st_path))
    fresh.eval()
    with torch.no_grad():
        g2 = torch.Generator().manual_seed(a.seed + 1)
        starts = torch.randint(0, len(stream) - a.seq - 1, (32,), generator=g2)
        idx = starts[:, None] + torch.arange(a.seq + 1)[None]
        chunk = data[idx]
        lg = fresh(chunk[:, :-1])
        eval_loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), chunk[:, 1:].reshape(-1))
    print(f"[verify] reloaded BF16 checkpoint, loss on 32 random windows {eval_loss:.3f}")
    stops = {tok.special_id[EOT], tok.special_id[EOT_TEXT]}
    prompts = [
        ("chat", render_chat([("user", "Hello")], add_generation_prompt=True)),
        ("chat", render_chat([("user", "Who are you?")], add_generation_prompt=True)),
        ("chat", render_chat([("user", "Tell me something wise.")], add_generation_prompt=True)),
        ("chat", render_chat([("user", "Thank you")], add_generation_prompt=True)),
        ("text", BOS + "The meaning of life is"),
        ("text", BOS + "A computer"),
    ]
    for kind, p in prompts:
        ids = tok.encode(p)
        out = greedy(fresh, ids, 60, stops)
        print(f"[sample] {kind} prompt ids {ids}")
        print(f"[sample]   prompt: {p!r}")
        print(f"[sample]   output ids: {out}")
        print(f"[sample]   output: {tok.decode(out)!r}")
    sizes = {fn: os.path.getsize(os.path.join(a.out, fn)) for fn in sorted(os.listdir(a.out))}
    print(f"[files] {sizes} total {sum(sizes.values())} bytes")
    print(f"[done] wall time {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
