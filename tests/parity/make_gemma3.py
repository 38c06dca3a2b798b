#!/usr/bin/env python3
"""Builds small random Gemma 3 text checkpoints (Gemma3ForCausalLM: the Hub's tensor names,
config.json fields and generation_config.json) and their greedy reference outputs from
reference_gemma3.py, in the fixtures.json format check_generate.py reads.

Every Gemma switch is exercised: the sliding window (8) is shorter than the longer prompts,
so local and global layers differ; the global layers' RoPE has linear scaling and a base
other than the local one; query_pre_attn_scalar differs from head_dim, and head_dim from
hidden_size / num_attention_heads; the final logits are soft-capped at a value the logits
reach; attn_logit_softcapping is set low enough that applying it (transformers does not)
would change the outputs; sqrt(96) is not a bfloat16, so the bf16 checkpoint checks the
scale's rounding; one checkpoint picks its global layers by sliding_window_pattern, the
other by layer_types.

Gemma3ForConditionalGeneration checkpoints (gemma3-mm: the Hub's layout
language_model.model.* / vision_tower.vision_model.* / multi_modal_projector.*, fp32;
gemma3-mm-bf16: transformers >= 4.52's model.language_model.* etc., bfloat16) get a
preprocessor_config.json (Gemma3ImageProcessor), a Gemma-style tokenizer.json (SentencePiece
BPE with byte fallback, "\n\n" and the image markup tokens), PNG/JPEG images written by PIL,
and image_fixtures.json in the format tests/vision/check_generate_images.py reads: the prompt
with one <start_of_image> per image, the processor's expansion, and the greedy continuation
of the reference fed PIL-preprocessed pixels. vision_fixtures.json holds each image's
pixel values, the tower's last_hidden_state and the projected image embeddings. The image
tokens' bidirectional attention must matter: a causal variant of the reference has to move
the log-probabilities.

usage: make_gemma3.py OUT_DIR
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_gemma3  # noqa: E402
from make_checkpoints import DTYPES, write_fixtures, write_safetensors  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "image"))

TEXT = dict(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", vocab_size=320,
            hidden_size=96, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1000000.0,
            rope_local_base_freq=10000.0, rope_scaling=dict(rope_type="linear", factor=4.0),
            query_pre_attn_scalar=24, sliding_window=8, final_logit_softcapping=3.0,
            attn_logit_softcapping=1.5, attention_bias=False, tie_word_embeddings=True,
            bos_token_id=2, eos_token_id=1, pad_token_id=0)

MODELS = {
    # Global layers by pattern: layers 2 (and a 3-pattern's 5th) are full attention.
    "gemma3-f32": ("f32", dict(sliding_window_pattern=3)),
    # Global layers listed: 0 and 3.
    "gemma3-bf16": ("bf16", dict(layer_types=["full_attention", "sliding_attention",
                                              "sliding_attention", "full_attention"])),
}
PROMPT_LENGTHS = [1, 7, 33, 100]
NEW_TOKENS = 12


def text_weights(c, gen, prefix="model."):
    """Gemma3ForCausalLM's tensors (tied head) in the Hub's names; RMSNorm weights are
    stored as offsets from 1, as Gemma stores them."""
    H, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]

    def rnd(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    W = {prefix + "embed_tokens.weight": rnd(V, H, std=0.3), prefix + "norm.weight": rnd(H, std=0.2)}
    for l in range(c["num_hidden_layers"]):
        p = f"{prefix}layers.{l}."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            W[p + n + ".weight"] = rnd(H, std=0.2)
        W[p + "self_attn.q_proj.weight"] = rnd(nh * hd, H, std=0.2)
        W[p + "self_attn.k_proj.weight"] = rnd(nkv * hd, H, std=0.2)
        W[p + "self_attn.v_proj.weight"] = rnd(nkv * hd, H, std=0.2)
        W[p + "self_attn.o_proj.weight"] = rnd(H, nh * hd, std=0.15)
        W[p + "self_attn.q_norm.weight"] = rnd(hd, std=0.2)
        W[p + "self_attn.k_norm.weight"] = rnd(hd, std=0.2)
        W[p + "mlp.gate_proj.weight"] = rnd(I, H, std=0.15)
        W[p + "mlp.up_proj.weight"] = rnd(I, H, std=0.15)
        W[p + "mlp.down_proj.weight"] = rnd(H, I, std=0.1)
    return W


VISION = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
              num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14,
              num_channels=3, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
              vision_use_head=False)
BOI, EOI, IMG, NL2 = 300, 301, 302, 260
MM_MODELS = {
    # (layout, storage dtype, images in the prompt)
    "gemma3-mm": ("hub", "f32", 2),
    "gemma3-mm-bf16": ("current", "bf16", 1),
}
LAYOUTS = {
    "hub": dict(text="language_model.model.", vision="vision_tower.vision_model.",
                projector="multi_modal_projector."),
    "current": dict(text="model.language_model.", vision="model.vision_tower.vision_model.",
                    projector="model.multi_modal_projector."),
}


def mm_config():
    text = {k: v for k, v in TEXT.items() if k not in ("architectures",)}
    # A soft-cap of 3 squeezes every log-probability difference; the images get a wider one.
    text.update(model_type="gemma3_text", final_logit_softcapping=30.0, layer_types=["full_attention", "sliding_attention",
                                                       "full_attention", "full_attention"])
    return dict(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
                text_config=text, vision_config=VISION, mm_tokens_per_image=4,
                boi_token_index=BOI, eoi_token_index=EOI, image_token_index=IMG,
                initializer_range=0.02)


def vision_weights(gen, names):
    d, i, p = VISION["hidden_size"], VISION["intermediate_size"], VISION["patch_size"]
    n = (VISION["image_size"] // p) ** 2

    def rnd(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    v = names["vision"]
    W = {v + "embeddings.patch_embedding.weight": rnd(d, 3, p, p, std=1.5 / (3 * p * p) ** 0.5),
         v + "embeddings.patch_embedding.bias": rnd(d, std=0.1),
         v + "embeddings.position_embedding.weight": rnd(n, d, std=0.3),
         v + "post_layernorm.weight": 1 + rnd(d, std=0.1), v + "post_layernorm.bias": rnd(d, std=0.1)}
    for l in range(VISION["num_hidden_layers"]):
        q = f"{v}encoder.layers.{l}."
        for ln in ("layer_norm1", "layer_norm2"):
            W[q + ln + ".weight"] = 1 + rnd(d, std=0.1)
            W[q + ln + ".bias"] = rnd(d, std=0.1)
        for nm in ("q_proj", "k_proj", "v_proj", "out_proj"):
            W[q + f"self_attn.{nm}.weight"] = rnd(d, d, std=1.5 / d ** 0.5)
            W[q + f"self_attn.{nm}.bias"] = rnd(d, std=0.1)
        W[q + "mlp.fc1.weight"] = rnd(i, d, std=1.5 / d ** 0.5)
        W[q + "mlp.fc1.bias"] = rnd(i, std=0.1)
        W[q + "mlp.fc2.weight"] = rnd(d, i, std=1.5 / i ** 0.5)
        W[q + "mlp.fc2.bias"] = rnd(d, std=0.1)
    W[names["projector"] + "mm_soft_emb_norm.weight"] = rnd(d, std=0.2)
    W[names["projector"] + "mm_input_projection_weight"] = rnd(d, TEXT["hidden_size"], std=1.0)
    return W


# The fixture tokenizer's pieces: bytes (fallback), runs of one to four newlines (built by the
# merges, as Gemma's vocabulary has one token per newline run), the markup tokens.
BASE_VOCAB = {f"<0x{b:02X}>": 4 + b for b in range(256)}
BASE_VOCAB.update({"\n\n": NL2, "\n": 261, "\n\n\n": 262, "\n\n\n\n": 263})
MERGES = [("\n", "\n"), ("\n\n", "\n"), ("\n\n", "\n\n")]
SPECIALS = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", BOI: "<start_of_image>",
            EOI: "<end_of_image>", IMG: "<image_soft_token>", 303: "<start_of_turn>",
            304: "<end_of_turn>"}
# A Gemma-style chat template written for these tests: turns in <start_of_turn> /
# <end_of_turn>, an image part as <start_of_image>, text parts trimmed.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")


def tokenize(text):
    """The fixture tokenizer on `text` as the tokenizers library runs it: special tokens split
    out, " " -> "\u2581", BPE (lowest-ranked pair first, leftmost first) over the characters,
    pieces outside the vocabulary as their UTF-8 bytes."""
    import re
    by_content = {c: i for i, c in SPECIALS.items()}
    pattern = "|".join(re.escape(c) for c in sorted(by_content, key=len, reverse=True))
    ranks = {m: r for r, m in enumerate(MERGES)}
    ids, pos = [], 0

    def segment(seg):
        syms = list(seg.replace(" ", "\u2581"))
        while True:
            best = None
            for i in range(len(syms) - 1):
                r = ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        for sym in syms:
            if sym in BASE_VOCAB:
                ids.append(BASE_VOCAB[sym])
            else:
                ids.extend(4 + b for b in sym.encode("utf-8"))

    for m in re.finditer(pattern, text):
        segment(text[pos:m.start()])
        ids.append(by_content[m.group(0)])
        pos = m.end()
    segment(text[pos:])
    return ids


def render_chat(messages):
    """jinja2 configured as transformers' apply_chat_template."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "chat_template", "reference"))
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    import render_reference_jinja2 as jr
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jr.AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = jr.tojson
    env.globals["raise_exception"] = jr.raise_exception
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True,
                                                 bos_token="<bos>", eos_token="<eos>")


def processor_text(text, n):
    """Gemma3Processor's replacement of each <start_of_image> in the rendered text."""
    full = "\n\n<start_of_image>" + "<image_soft_token>" * n + "<end_of_image>\n\n"
    return text.replace("<start_of_image>", full)


def write_gemma_tokenizer(d):
    """A Gemma-style tokenizer.json: SentencePiece BPE over "▁"-for-space text with byte
    fallback, "\n\n" as a piece, and the chat / image markup as special tokens."""
    specials = SPECIALS
    vocab = dict(BASE_VOCAB)
    for i in range(264, 300):
        vocab[f"<unused{i}>"] = i
    vocab.update({c: i for i, c in specials.items()})
    for i in range(305, TEXT["vocab_size"]):
        vocab[f"<unused{i}>"] = i
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, c in sorted(specials.items())],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": None, "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                  "merges": [" ".join(m) for m in MERGES]},
    }
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                   "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE}, f)


def make_chat_cases(cfg, W, names, pcfg, files, dtype):
    """Chats with image parts as a client sends them: rendered by jinja2, expanded as text by
    the processor, tokenized, answered greedily by the reference. `grpc` marks the shape
    `iris client chat` sends (its images first in the user message)."""
    from PIL import Image
    n = cfg["mm_tokens_per_image"]
    convos = [
        ("grpc", [{"role": "user", "content": [{"type": "image", "file": files[0]},
                                               {"type": "image", "file": files[1]},
                                               {"type": "text", "text": "What differs?"}]}]),
        ("http", [{"role": "user", "content": [{"type": "text", "text": "Compare "},
                                               {"type": "image", "file": files[1]},
                                               {"type": "text", "text": "with"},
                                               {"type": "image", "file": files[0]}]}]),
    ]
    cases = []
    for kind, convo in convos:
        rendered = render_chat([{"role": m["role"], "content": [{k: v for k, v in p.items() if k != "file"}
                                                                for p in m["content"]]} for m in convo])
        prompt = tokenize(processor_text(rendered, n))
        images = [p["file"] for m in convo for p in m["content"] if p["type"] == "image"]
        pixels = torch.stack([torch.from_numpy(reference_gemma3.gemma3_pixel_values(Image.open(p), pcfg))
                              for p in images])
        ids, lps = reference_gemma3.greedy_with_images(cfg, W, names, prompt, pixels, NEW_TOKENS, dtype)
        cases.append({"model": "gemma3-mm", "kind": kind, "messages": convo, "rendered": rendered,
                      "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
    return cases


def make_multimodal(out):
    from PIL import Image
    import make_reference as image_tools  # test-image generator (photo) only
    cfg = mm_config()
    pcfg = {"image_processor_type": "Gemma3ImageProcessor", "processor_class": "Gemma3Processor",
            "do_resize": True, "size": {"height": 56, "width": 56}, "resample": 2,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": None,
            "do_pan_and_scan": None, "image_seq_length": 4}
    image_cases, vision_cases, chat_cases = [], [], []
    for mi, (name, (layout, dname, n_images)) in enumerate(MM_MODELS.items()):
        names = LAYOUTS[layout]
        gen = torch.Generator().manual_seed(8765 + mi)
        W32 = text_weights(dict(TEXT), gen, prefix=names["text"])
        W32.update(vision_weights(gen, names))
        dtype, st_dtype = DTYPES[dname]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(dict(cfg, torch_dtype={"f32": "float32", "bf16": "bfloat16"}[dname]), f, indent=2)
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 2, "eos_token_id": [1, 304], "pad_token_id": 0}, f, indent=2)
        with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
            json.dump(pcfg, f, indent=2)
        write_gemma_tokenizer(d)
        write_safetensors(os.path.join(d, "model.safetensors"), W32, st_dtype, dtype)
        Wd = {k: v.to(dtype).float() for k, v in W32.items()}
        files = []
        for k, (w, h, fmt) in enumerate([(83, 61, "PNG"), (50, 97, "JPEG")][:n_images]):
            path = os.path.join(d, f"image{k}.{fmt.lower()}")
            Image.fromarray(image_tools.photo(w, h, 21 + k + 5 * mi)).save(path, fmt)
            files.append(path)
        pixels = torch.stack([torch.from_numpy(reference_gemma3.gemma3_pixel_values(Image.open(p), pcfg))
                              for p in files])
        with torch.no_grad():
            last, feats = reference_gemma3.image_features(cfg, Wd, names, pixels)
        vision_cases.append({"model": name, "images": files, "pixel_values": pixels.flatten().tolist(),
                             "last_hidden_state": last.flatten().tolist(),
                             "image_embeds": feats.flatten().tolist()})
        # <bos> text <start_of_image> text [<start_of_image> text]: over 8 positions, so the
        # sliding window cuts across the images.
        tg = torch.Generator().manual_seed(77 + mi)

        def text(n):
            return torch.randint(4, 260, (n,), generator=tg).tolist()

        prompt = [2] + text(3)
        for i in range(n_images):
            prompt += [BOI] + text(2 - i)
        expanded = reference_gemma3.expand_prompt(cfg, prompt, NL2)
        ids, lps = reference_gemma3.greedy_with_images(cfg, Wd, names, expanded, pixels, NEW_TOKENS, dtype)
        causal_ids, causal_lps = reference_gemma3.greedy_with_images(
            cfg, Wd, names, expanded, pixels, NEW_TOKENS, dtype, bidirectional=False)
        delta = max(abs(a - b) for a, b in zip(lps, causal_lps))
        # The two-image fixture is the one that shows it (10x the 1e-4 bound at least).
        assert name != "gemma3-mm" or causal_ids != ids or delta > 1e-3, \
            f"{name}: causal image attention changes logprobs by only {delta:.2e}"
        if name == "gemma3-mm":
            chat_cases += make_chat_cases(cfg, Wd, names, pcfg, files, dtype)
        image_cases.append({"model": name, "images": files, "prompt_ids": prompt,
                            "expanded_prompt_ids": expanded, "output_ids": ids, "logprobs": lps,
                            "causal_output_ids": causal_ids, "causal_logprobs": causal_lps})
    with open(os.path.join(out, "image_fixtures.json"), "w") as f:
        json.dump({"reference": "PIL + numpy Gemma3ImageProcessor, tests/parity/reference_gemma3.py",
                   "cases": image_cases}, f)
    with open(os.path.join(out, "chat_fixtures.json"), "w") as f:
        json.dump({"reference": "jinja2 (as transformers) + Gemma3Processor text expansion + "
                   "fixture tokenizer + PIL + tests/parity/reference_gemma3.py", "cases": chat_cases}, f)
    with open(os.path.join(out, "vision_fixtures.json"), "w") as f:
        json.dump({"reference": "tests/parity/reference_gemma3.py", "cases": vision_cases}, f)
    print(f"wrote {len(image_cases)} Gemma 3 image cases to {out}/image_fixtures.json")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    cases = []
    for mi, (name, (dname, extra)) in enumerate(MODELS.items()):
        cfg = dict(TEXT, **extra)
        gen = torch.Generator().manual_seed(4321 + mi)
        W32 = text_weights(cfg, gen)
        prompts = [torch.randint(3, cfg["vocab_size"], (n,), generator=gen).tolist()
                   for n in PROMPT_LENGTHS]
        dtype, st_dtype = DTYPES[dname]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        c = dict(cfg, torch_dtype={"f32": "float32", "bf16": "bfloat16"}[dname])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}, f, indent=2)
        write_safetensors(os.path.join(d, "model.safetensors"), W32, st_dtype, dtype)
        Wd = {k: v.to(dtype).float() for k, v in W32.items()}
        for prompt in prompts:
            ids, lps = reference_gemma3.greedy(c, Wd, prompt, NEW_TOKENS, embed_dtype=dtype)
            cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
        # The switches must matter on these fixtures: each changed alone moves the outputs.
        prompt = prompts[-1]
        base = reference_gemma3.forward(c, Wd, prompt, embed_dtype=dtype)
        for what, over, kw in (("attention soft-cap applied", {}, dict(attn_softcap=True)),
                               ("no sliding window", dict(sliding_window=4096), {}),
                               ("no final soft-cap", dict(final_logit_softcapping=None), {}),
                               ("unscaled global RoPE", dict(rope_scaling=None), {})):
            alt = reference_gemma3.forward(dict(c, **over), Wd, prompt, embed_dtype=dtype, **kw)
            delta = float((torch.log_softmax(alt, -1) - torch.log_softmax(base, -1)).abs().max())
            assert delta > 1e-2, f"{name}: '{what}' changes logprobs by only {delta:.2e}"
    write_fixtures(out, "tests/parity/reference_gemma3.py (independent PyTorch)", NEW_TOKENS, cases)
    make_multimodal(out)


if __name__ == "__main__":
    main()
