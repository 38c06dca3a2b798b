#!/usr/bin/env python3
"""Builds tiny random LLaVA checkpoints (safetensors + config.json in transformers' layout)
and reference fixtures from reference_llava.py:

  clip-llava            CLIP tower (quick_gelu, class token, pre_layrnorm), feature layer -2,
                        strategy "default", Llama text model; legacy tensor names; fp32;
                        two images in one prompt.
  siglip-llava          SigLIP tower (gelu_pytorch_tanh, patch bias, no class token; 44 px
                        with patch 14, so the last 2 pixel rows/columns are never seen), feature
                        layer -1, strategy "full", projector without biases, Qwen2 text model
                        with tied embeddings; transformers >= 4.52 tensor names; bfloat16,
                        sharded over two files with an index.
  clip-llava-multilayer CLIP tower (gelu), feature layers [-2, 0] concatenated, strategy
                        "full", Mistral text model; transformers >= 4.52 names; fp32.

image_fixtures.json holds end-to-end cases: image files (PNG and JPEG written by PIL), the
checkpoint's preprocessor_config.json, a prompt with one image token per image (Iris
expands it), and the greedy continuation of the reference fed with pixel values computed by
PIL + numpy exactly as transformers' CLIPImageProcessor / SiglipImageProcessor
(tests/image/make_reference.py).

chat_fixtures.json holds gRPC Chat cases for clip-llava, which also gets a tokenizer
(tokenizer.json: byte-level, no merges, "<image>" as special token 319) and a LLaVA-style
chat template that iterates over content parts: the messages rendered by jinja2 configured as
transformers does, tokenized, each image's placeholder expanded, and the greedy continuation
of the reference given the PIL-preprocessed image files.

fixtures.json holds, per checkpoint: pixel_values [num_images, 3, S, S], the selected vision
features of every feature layer [num_images * tokens, D], the projector output
[num_images * tokens, text hidden], a prompt whose image placeholders are already expanded
to tokens_per_image ids each, and the greedy continuation with its log-probabilities.

usage: make_vision_checkpoints.py OUT_DIR
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
sys.path.insert(0, os.path.join(HERE, "..", "image"))
import reference_llava  # noqa: E402
import make_reference as image_reference  # noqa: E402
from make_checkpoints import write_byte_level_tokenizer, write_safetensors  # noqa: E402

DTYPES = {"f32": (torch.float32, "F32", "float32"), "bf16": (torch.bfloat16, "BF16", "bfloat16")}

TEXT_LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=320,
                  hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                  rope_theta=10000.0, max_position_embeddings=256, hidden_act="silu",
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
TEXT_QWEN2 = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=320,
                  hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, max_position_embeddings=256, hidden_act="silu",
                  tie_word_embeddings=True, use_sliding_window=False, bos_token_id=1,
                  eos_token_id=2)
TEXT_MISTRAL = dict(model_type="mistral", architectures=["MistralForCausalLM"], vocab_size=320,
                    hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
                    rope_theta=10000.0, max_position_embeddings=256, hidden_act="silu",
                    sliding_window=4096, tie_word_embeddings=False, bos_token_id=1,
                    eos_token_id=2)


def llava(text, vision, **kw):
    return dict(architectures=["LlavaForConditionalGeneration"], model_type="llava",
                text_config=text, vision_config=vision, **kw)


MODELS = {
    "clip-llava": dict(layout="legacy", dtype="f32", num_images=2, config=llava(
        TEXT_LLAMA,
        dict(model_type="clip_vision_model", hidden_size=48, intermediate_size=96,
             num_hidden_layers=3, num_attention_heads=4, image_size=56, patch_size=14,
             num_channels=3, layer_norm_eps=1e-5, hidden_act="quick_gelu", projection_dim=32),
        image_token_index=319, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", multimodal_projector_bias=True, image_seq_length=16,
        tie_word_embeddings=False)),
    "siglip-llava": dict(layout="current", dtype="bf16", num_images=1, config=llava(
        TEXT_QWEN2,
        dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
             num_hidden_layers=2, num_attention_heads=2, image_size=44, patch_size=14,
             num_channels=3, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
        image_token_index=300, vision_feature_layer=-1, vision_feature_select_strategy="full",
        projector_hidden_act="gelu_pytorch_tanh", multimodal_projector_bias=False,
        image_seq_length=9, tie_word_embeddings=True)),
    "clip-llava-multilayer": dict(layout="current", dtype="f32", num_images=1, config=llava(
        TEXT_MISTRAL,
        dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=80,
             num_hidden_layers=3, num_attention_heads=2, image_size=28, patch_size=14,
             num_channels=3, layer_norm_eps=1e-5, hidden_act="gelu"),
        image_token_index=5, vision_feature_layer=[-2, 0], vision_feature_select_strategy="full",
        projector_hidden_act="gelu", multimodal_projector_bias=True, image_seq_length=5,
        tie_word_embeddings=False)),
}

NEW_TOKENS = 8


def random_weights(cfg, layout, gen):
    """Tensor name -> fp32 tensor, names in `layout`, shapes from the reference modules."""
    names = reference_llava.LAYOUTS[layout]
    parts = {
        names["vision"]: reference_llava.VisionTower(cfg["vision_config"]),
        names["projector"]: reference_llava.Projector(cfg),
        names["text"]: reference_llava.TextModel(cfg["text_config"]),
    }

    def rnd(shape, std):
        return torch.randn(*shape, generator=gen) * std

    W = {}
    for prefix, module in parts.items():
        for name, p in module.state_dict().items():
            shape = tuple(p.shape)
            if "norm" in name:  # LayerNorm / RMSNorm
                t = 1.0 + rnd(shape, 0.1) if name.endswith("weight") else rnd(shape, 0.1)
            elif name.endswith("class_embedding"):
                t = rnd(shape, 0.5)
            elif name.endswith("position_embedding.weight"):
                t = rnd(shape, 0.3)
            elif name.endswith("embed_tokens.weight"):
                t = rnd(shape, 1.0)
            elif name.endswith("bias"):
                t = rnd(shape, 0.1)
            else:  # linear / conv weights: fan-in scaled, a little hot so attention is peaky
                fan_in = 1
                for d in shape[1:]:
                    fan_in *= d
                t = rnd(shape, 1.5 / fan_in ** 0.5)
            W[prefix + name] = t
    tc = cfg["text_config"]
    if not (tc.get("tie_word_embeddings") or cfg.get("tie_word_embeddings")):
        W[names["lm_head"]] = rnd((tc["vocab_size"], tc["hidden_size"]), 0.3)
    return W


def make_prompt(cfg, num_images, gen):
    vocab = cfg["text_config"]["vocab_size"]
    img = cfg["image_token_index"]
    tpi = reference_llava.tokens_per_image(cfg)

    def text(n):
        out = []
        while len(out) < n:
            t = int(torch.randint(3, vocab, (1,), generator=gen))
            if t != img:
                out.append(t)
        return out

    prompt = [1] + text(5)
    for i in range(num_images):
        prompt += [img] * tpi + text(4 - i)
    return prompt


def write_checkpoint(d, cfg, W, dname):
    dtype, st_dtype, torch_name = DTYPES[dname]
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn.endswith(".json"):
            os.remove(os.path.join(d, fn))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, torch_dtype=torch_name), f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
    if dname == "bf16":  # sharded, with an index
        names = sorted(W)
        half = len(names) // 2
        weight_map = {}
        for pi, part in enumerate([names[:half], names[half:]]):
            fn = f"model-0000{pi + 1}-of-00002.safetensors"
            write_safetensors(os.path.join(d, fn), {k: W[k] for k in part}, st_dtype, dtype)
            weight_map.update({k: fn for k in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    else:
        write_safetensors(os.path.join(d, "model.safetensors"), W, st_dtype, dtype)


# A LLaVA-1.5-style conversation template written for these tests: content is a list of parts.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>", 319: "<image>"}
SPECIALS.update({i: f"<extra_{i}>" for i in range(259, 319)})


def write_tokenizer(d):
    write_byte_level_tokenizer(d, SPECIALS, {"bos_token": "<s>", "eos_token": "</s>",
                                             "unk_token": "<unk>", "chat_template": CHAT_TEMPLATE})


def render_chat(messages):
    """jinja2 configured as transformers' apply_chat_template."""
    sys.path.insert(0, os.path.join(HERE, "..", "chat_template", "reference"))
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    import render_reference_jinja2 as jr
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jr.AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = jr.tojson
    env.globals["raise_exception"] = jr.raise_exception
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True,
                                                 bos_token="<s>", eos_token="</s>",
                                                 unk_token="<unk>", tools=None, documents=None)


def tokenize(text):
    """The tokenizer above on `text`: special tokens matched anywhere (the messages below spell
    none), every other UTF-8 byte its own token."""
    import re
    pattern = "|".join(re.escape(c) for c in sorted(SPECIALS.values(), key=len, reverse=True))
    ids, pos = [], 0
    by_content = {c: i for i, c in SPECIALS.items()}
    for m in re.finditer(pattern, text):
        ids += [3 + b for b in text[pos:m.start()].encode("utf-8")]
        ids.append(by_content[m.group(0)])
        pos = m.end()
    return ids + [3 + b for b in text[pos:].encode("utf-8")]


def chat_cases(out, ref, pcfg, files, img, tpi):
    from PIL import Image
    cases = []
    convos = [
        [{"role": "user", "content": [{"type": "image", "file": files[0]},
                                      {"type": "text", "text": "What is in this picture?"}]}],
        [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
         {"role": "user", "content": [{"type": "text", "text": "Compare "},
                                      {"type": "image", "file": files[1]},
                                      {"type": "text", "text": "with"},
                                      {"type": "image", "file": files[0]}]}],
    ]
    for convo in convos:
        rendered = render_chat([{"role": m["role"],
                                 "content": [{k: v for k, v in p.items() if k != "file"}
                                             for p in m["content"]]} for m in convo])
        collapsed = tokenize(rendered)
        expanded = []
        for t in collapsed:
            expanded += [t] * (tpi if t == img else 1)
        images = [p["file"] for m in convo for p in m["content"] if p["type"] == "image"]
        pixels = torch.stack([torch.from_numpy(image_reference.hf_pixel_values(Image.open(p), pcfg))
                              for p in images]).float()
        ids, lps = ref.greedy(expanded, pixels, NEW_TOKENS)
        cases.append({"model": "clip-llava", "messages": convo, "rendered": rendered,
                      "prompt_ids": expanded, "output_ids": ids, "logprobs": lps})
    return cases


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    cases = []
    for mi, (name, spec) in enumerate(MODELS.items()):
        cfg = spec["config"]
        gen = torch.Generator().manual_seed(4321 + mi)
        W = random_weights(cfg, spec["layout"], gen)
        write_checkpoint(os.path.join(out, name), cfg, W, spec["dtype"])
        dtype = DTYPES[spec["dtype"]][0]
        ref = reference_llava.Llava(cfg, {k: v.to(dtype).float() for k, v in W.items()})
        vc = cfg["vision_config"]
        n = spec["num_images"]
        pixels = torch.randn(n, vc["num_channels"], vc["image_size"], vc["image_size"], generator=gen)
        prompt = make_prompt(cfg, n, gen)
        with torch.no_grad():
            feats = ref.selected_features(pixels)
            embeds = ref.image_embeds(pixels)
        ids, lps = ref.greedy(prompt, pixels, NEW_TOKENS)
        cases.append({
            "model": name,
            "num_images": n,
            "tokens_per_image": reference_llava.tokens_per_image(cfg),
            "pixel_values": pixels.flatten().tolist(),
            "pixel_shape": list(pixels.shape),
            "features": [f.reshape(-1, f.shape[-1]).flatten().tolist() for f in feats],
            "feature_dim": feats[0].shape[-1],
            "image_embeds": embeds.flatten().tolist(),
            "prompt_ids": prompt,
            "output_ids": ids,
            "logprobs": lps,
        })
    # End to end from image files, for `iris generate --image`.
    from PIL import Image
    image_cases = []
    for mi, name in enumerate(["clip-llava", "siglip-llava"]):
        cfg = MODELS[name]["config"]
        vc = cfg["vision_config"]
        size = vc["image_size"]
        if vc["model_type"] == "clip_vision_model":
            pcfg = image_reference.clip_config(shortest=size, crop=(size, size))
        else:
            pcfg = image_reference.siglip_config(size, size)
        d = os.path.join(out, name)
        with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
            json.dump(pcfg, f)
        files = []
        for k, (w, h, fmt) in enumerate([(83, 61, "PNG"), (50, 97, "JPEG")]):
            path = os.path.join(d, f"image{k}.{fmt.lower()}")
            Image.fromarray(image_reference.photo(w, h, 11 + k + 7 * mi)).save(path, fmt)
            files.append(path)
        pixels = torch.stack([torch.from_numpy(image_reference.hf_pixel_values(Image.open(p), pcfg))
                              for p in files])
        gen = torch.Generator().manual_seed(99 + mi)
        expanded = make_prompt(cfg, len(files), gen)
        img = cfg["image_token_index"]
        collapsed = [t for i, t in enumerate(expanded) if t != img or i == 0 or expanded[i - 1] != img]
        W = random_weights(cfg, MODELS[name]["layout"], torch.Generator().manual_seed(4321 + list(MODELS).index(name)))
        dtype = DTYPES[MODELS[name]["dtype"]][0]
        ref = reference_llava.Llava(cfg, {k: v.to(dtype).float() for k, v in W.items()})
        ids, lps = ref.greedy(expanded, pixels.float(), NEW_TOKENS)
        image_cases.append({"model": name, "images": files, "prompt_ids": collapsed,
                            "expanded_prompt_ids": expanded, "output_ids": ids, "logprobs": lps})
        if name == "clip-llava":
            # A large image (64 Mpixel, a few hundred KB) whose decode and preprocessing take
            # long enough for the serve test to cancel a call while they run.
            Image.new("RGB", (8000, 8000), (120, 30, 200)).save(os.path.join(d, "large.jpeg"),
                                                                 "JPEG", quality=50)
            write_tokenizer(d)
            chat = chat_cases(out, ref, pcfg, files, img, reference_llava.tokens_per_image(cfg))
            with open(os.path.join(out, "chat_fixtures.json"), "w") as f:
                json.dump({"reference": "jinja2 (as transformers) + PIL + reference_llava.py",
                           "cases": chat}, f)
    with open(os.path.join(out, "image_fixtures.json"), "w") as f:
        json.dump({"reference": "PIL + numpy preprocessing, tests/vision/reference_llava.py",
                   "cases": image_cases}, f)

    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump({"reference": "tests/vision/reference_llava.py (independent PyTorch)",
                   "cases": cases}, f)
    print(f"wrote {len(cases)} LLaVA cases to {out}/fixtures.json")


if __name__ == "__main__":
    main()
