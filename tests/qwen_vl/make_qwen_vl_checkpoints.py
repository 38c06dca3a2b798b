#!/usr/bin/env python3
"""Builds tiny random Qwen2.5-VL checkpoints (safetensors + config.json +
preprocessor_config.json as the Hub has them, with the Hub's exact tensor names) and
reference fixtures from reference_qwen2_5_vl.py:

  qwen25vl-hub      the Hub's layout (model.*, visual.*, lm_head.weight), untied, fp32
  qwen25vl-current  transformers >= 4.52 layout (model.language_model.*, model.visual.*),
                    tied embeddings, text fields also under text_config, fp32
  qwen2-text        qwen25vl-hub's language model as a plain Qwen2ForCausalLM (text-only
                    prompts must give the same tokens: M-RoPE with equal rows is RoPE)

fixtures.json holds per checkpoint:
  text          a text-only prompt and its greedy continuation with log-probabilities
  mrope_embeds  a prompt with two images of different grid sizes whose placeholder rows take
                given embeddings (so M-RoPE is checked apart from the vision tower): the
                reference's get_rope_index positions and delta, and the greedy continuation
  vision        images (PNG written by PIL) of different sizes, their patches from the
                Pillow-based processor reference, grids, and the vision tower's features
  images        a prompt with the images' placeholders expanded, and its greedy continuation
                fed with the reference tower's features

usage: make_qwen_vl_checkpoints.py OUT_DIR
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
import reference_qwen2_5_vl as ref  # noqa: E402
from make_checkpoints import write_byte_level_tokenizer, write_safetensors  # noqa: E402

IMAGE, VIDEO, VSTART, VEND, IM_START = 300, 301, 302, 303, 304
NEW_TOKENS = 8
VIDEO_FRAMES, VIDEO_FPS = 6, 3.0  # sampled to 2 frames per second: 4 frames, 2 temporal patches

TEXT = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=1000000.0, max_position_embeddings=4096, hidden_act="silu",
            use_sliding_window=False, sliding_window=4096, max_window_layers=2,
            bos_token_id=1, eos_token_id=2,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
VISION = dict(depth=4, hidden_act="silu", hidden_size=32, intermediate_size=48, num_heads=2,
              in_chans=3, out_hidden_size=64, patch_size=14, spatial_merge_size=2,
              spatial_patch_size=14, window_size=112, fullatt_block_indexes=[1, 3],
              tokens_per_second=2, temporal_patch_size=2)
PROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14,
             "temporal_patch_size": 2, "merge_size": 2,
             "image_mean": list(ref.CLIP_MEAN), "image_std": list(ref.CLIP_STD),
             "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}


def hub_config(tie):
    return dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
                **dict(TEXT, tie_word_embeddings=tie), vision_config=VISION,
                image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
                vision_end_token_id=VEND, vision_token_id=305)


def current_config(tie):
    cfg = hub_config(tie)
    cfg["text_config"] = dict(TEXT, model_type="qwen2_5_vl_text", tie_word_embeddings=tie)
    return cfg


def random_weights(cfg, gen):
    """Hub-named tensors (model.*, visual.*, lm_head.weight), shapes as transformers'."""
    t, v = ref.text_cfg(cfg), cfg["vision_config"]
    H, I, V = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    nh, nkv = t["num_attention_heads"], t["num_key_value_heads"]
    hd = H // nh
    D, DI, O = v["hidden_size"], v["intermediate_size"], v["out_hidden_size"]
    P, TP, M = v["patch_size"], v["temporal_patch_size"], v["spatial_merge_size"]

    def rnd(shape, std):
        return torch.randn(*shape, generator=gen) * std

    def lin(out, inp, gain=1.5):
        return rnd((out, inp), gain / inp ** 0.5)

    W = {"model.embed_tokens.weight": rnd((V, H), 1.0), "model.norm.weight": 1 + rnd((H,), 0.1)}
    for l in range(t["num_hidden_layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1 + rnd((H,), 0.1)
        W[p + "post_attention_layernorm.weight"] = 1 + rnd((H,), 0.1)
        W[p + "self_attn.q_proj.weight"] = lin(nh * hd, H)
        W[p + "self_attn.q_proj.bias"] = rnd((nh * hd,), 0.1)
        W[p + "self_attn.k_proj.weight"] = lin(nkv * hd, H)
        W[p + "self_attn.k_proj.bias"] = rnd((nkv * hd,), 0.1)
        W[p + "self_attn.v_proj.weight"] = lin(nkv * hd, H)
        W[p + "self_attn.v_proj.bias"] = rnd((nkv * hd,), 0.1)
        W[p + "self_attn.o_proj.weight"] = lin(H, nh * hd)
        W[p + "mlp.gate_proj.weight"] = lin(I, H)
        W[p + "mlp.up_proj.weight"] = lin(I, H)
        W[p + "mlp.down_proj.weight"] = lin(H, I)
    if not t.get("tie_word_embeddings"):
        W["lm_head.weight"] = rnd((V, H), 0.3)
    W["visual.patch_embed.proj.weight"] = rnd((D, 3, TP, P, P), 1.5 / (3 * TP * P * P) ** 0.5)
    for l in range(v["depth"]):
        p = f"visual.blocks.{l}."
        W[p + "norm1.weight"] = 1 + rnd((D,), 0.1)
        W[p + "norm2.weight"] = 1 + rnd((D,), 0.1)
        W[p + "attn.qkv.weight"] = lin(3 * D, D, 2.5)
        W[p + "attn.qkv.bias"] = rnd((3 * D,), 0.1)
        W[p + "attn.proj.weight"] = lin(D, D)
        W[p + "attn.proj.bias"] = rnd((D,), 0.1)
        W[p + "mlp.gate_proj.weight"] = lin(DI, D)
        W[p + "mlp.gate_proj.bias"] = rnd((DI,), 0.1)
        W[p + "mlp.up_proj.weight"] = lin(DI, D)
        W[p + "mlp.up_proj.bias"] = rnd((DI,), 0.1)
        W[p + "mlp.down_proj.weight"] = lin(D, DI)
        W[p + "mlp.down_proj.bias"] = rnd((D,), 0.1)
    W["visual.merger.ln_q.weight"] = 1 + rnd((D,), 0.1)
    W["visual.merger.mlp.0.weight"] = lin(D * M * M, D * M * M)
    W["visual.merger.mlp.0.bias"] = rnd((D * M * M,), 0.1)
    W["visual.merger.mlp.2.weight"] = lin(O, D * M * M)
    W["visual.merger.mlp.2.bias"] = rnd((O,), 0.1)
    return W


def renamed(W, layout):
    """The Hub's names -> transformers >= 4.52 names."""
    if layout == "hub":
        return dict(W)
    out = {}
    for k, t in W.items():
        if k.startswith("model."):
            out["model.language_model." + k[len("model."):]] = t
        elif k.startswith("visual."):
            out["model." + k] = t
        else:
            out[k] = t
    return out


def write_checkpoint(d, cfg, W, extra_files=None):
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn.endswith(".json"):
            os.remove(os.path.join(d, fn))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(cfg, torch_dtype="float32"), f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
    for name, content in (extra_files or {}).items():
        with open(os.path.join(d, name), "w") as f:
            json.dump(content, f, indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), W, "F32", torch.float32)


# Qwen2.5-VL's chat markup, written for these tests in the shape of the Hub's template: each
# image part becomes <|vision_start|><|image_pad|><|vision_end|>, each video part the same
# with <|video_pad|>, which the processor (here: Iris) expands to the media's tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'video' %}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIALS = {0: "<unk>", 1: "<|endoftext|>", 2: "<|im_end|>", IMAGE: "<|image_pad|>",
            VIDEO: "<|video_pad|>", VSTART: "<|vision_start|>", VEND: "<|vision_end|>",
            IM_START: "<|im_start|>", 305: "<|vision_pad|>"}
SPECIALS.update({i: f"<|extra_{i}|>" for i in list(range(259, 300)) + list(range(306, 320))})


def write_tokenizer(d):
    """Byte-level tokenizer.json without merges (byte b is token 3 + b) and the template."""
    write_byte_level_tokenizer(d, SPECIALS, {"bos_token": None, "eos_token": "<|im_end|>",
                                             "pad_token": "<|endoftext|>",
                                             "chat_template": CHAT_TEMPLATE})


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
                                                 bos_token="", eos_token="<|im_end|>", tools=None,
                                                 documents=None)


def tokenize(text):
    """The tokenizer above: special tokens matched anywhere, every other byte its own token."""
    import re
    pattern = "|".join(re.escape(c) for c in sorted(SPECIALS.values(), key=len, reverse=True))
    by_content = {c: i for i, c in SPECIALS.items()}
    ids, pos = [], 0
    for m in re.finditer(pattern, text):
        ids += [3 + b for b in text[pos:m.start()].encode("utf-8")]
        ids.append(by_content[m.group(0)])
        pos = m.end()
    return ids + [3 + b for b in text[pos:].encode("utf-8")]


def expand(ids, token, counts):
    """Each occurrence of `token` repeated counts[i] times, in order."""
    out, k = [], 0
    for t in ids:
        if t == token:
            out += [token] * counts[k]
            k += 1
        else:
            out.append(t)
    assert k == len(counts)
    return out


def text_tokens(n, gen):
    out = []
    while len(out) < n:
        t = int(torch.randint(3, IMAGE, (1,), generator=gen))
        out.append(t)
    return out


def photo(width, height, seed):
    """A smooth random RGB picture (so resampling matters) as a PIL image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    chans = []
    for c in range(3):
        a, b, ph = rng.uniform(0.02, 0.15, 3)
        chans.append(127 + 100 * np.sin(a * x + ph * 6) * np.cos(b * y) + rng.normal(0, 12, (height, width)))
    return Image.fromarray(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8), "RGB")


def media_prompt(grids, gen, merge=2):
    """<bos> text, then per media <|vision_start|> placeholders <|vision_end|> text."""
    prompt = [1] + text_tokens(5, gen)
    for i, (t, h, w) in enumerate(grids):
        prompt += [VSTART] + [IMAGE] * (t * h * w // (merge * merge)) + [VEND] + text_tokens(3 + i, gen)
    return prompt


def case_for(cfg, W, prompt, embeds, grids, video_grids=(), seconds=None):
    pos, delta = ref.rope_index(cfg, prompt, image_grids=grids, video_grids=video_grids,
                                second_per_grid_ts=seconds)
    ids, lps = ref.greedy(cfg, W, prompt, NEW_TOKENS, embeds, pos, delta)
    return {"prompt": prompt, "grids": [list(g) for g in grids], "positions": pos.t().reshape(-1).tolist(),
            "delta": delta, "ids": ids, "logprobs": lps}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    fixtures = {}
    # Images whose sizes give different grids (and windows cut at the right/bottom edges).
    image_specs = [("wide.png", 150, 100), ("tall.png", 60, 130)]
    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir, exist_ok=True)
    for i, (name, w, h) in enumerate(image_specs):
        photo(w, h, 77 + i).save(os.path.join(img_dir, name))

    # Video frames: a scene panning right, VIDEO_FRAMES frames of one size.
    base = photo(120, 90, 91)
    video_files = []
    for k in range(VIDEO_FRAMES):
        fn = f"frame{k}.png"
        base.crop((6 * k, 0, 6 * k + 70, 90)).save(os.path.join(img_dir, fn))
        video_files.append(fn)

    for ci, (name, layout, tie) in enumerate([("qwen25vl-hub", "hub", False),
                                              ("qwen25vl-current", "current", True)]):
        gen = torch.Generator().manual_seed(4321 + ci)
        cfg = hub_config(tie) if layout == "hub" else current_config(tie)
        W = random_weights(cfg, gen)
        write_checkpoint(os.path.join(out, name), cfg, renamed(W, layout),
                         {"preprocessor_config.json": PROCESSOR})
        if layout == "hub":
            text_only = dict(TEXT, architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                             tie_word_embeddings=tie)
            del text_only["rope_scaling"]
            write_checkpoint(os.path.join(out, "qwen2-text"), text_only,
                             {k: t for k, t in W.items() if not k.startswith("visual.")})
        f = {}
        prompt = [1] + text_tokens(11, gen)
        ids, lps = ref.greedy(cfg, W, prompt, NEW_TOKENS)
        f["text"] = {"prompt": prompt, "ids": ids, "logprobs": lps}

        # M-RoPE apart from the tower: two "images" of different grids with given embeddings.
        grids = [(1, 4, 6), (1, 8, 4)]
        prompt = media_prompt(grids, gen)
        H = ref.text_cfg(cfg)["hidden_size"]
        rows = [i for i, t in enumerate(prompt) if t == IMAGE]
        emb = torch.randn(len(rows), H, generator=gen)
        case = case_for(cfg, W, prompt, dict(zip(rows, emb)), grids)
        case["embeds"] = emb.reshape(-1).tolist()
        f["mrope_embeds"] = case

        # The vision tower on real images through the processor reference.
        vis = {"images": [], "patches": [], "grids": [], "features": []}
        feats_all, grids = [], []
        for iname, _, _ in image_specs:
            im = Image.open(os.path.join(img_dir, iname))
            patches, grid = ref.preprocess(im, PROCESSOR)
            feats = ref.vision(cfg, W, patches, [grid])
            vis["images"].append(iname)
            vis["patches"].append(patches.reshape(-1).tolist())
            vis["grids"].append(list(grid))
            vis["features"].append(feats.reshape(-1).tolist())
            feats_all.append(feats)
            grids.append(grid)
        # Both images in one tower call: windows and full attention stay per image.
        both = ref.vision(cfg, W, torch.cat([torch.tensor(p).view(-1, ref_patch_dim(cfg)) for p in vis["patches"]]), grids)
        diff = float((both - torch.cat(feats_all)).abs().max())
        assert diff < 1e-4 * float(both.abs().max()), diff
        f["vision"] = vis
        prompt = media_prompt(grids, gen)
        rows = [i for i, t in enumerate(prompt) if t == IMAGE]
        f["images"] = case_for(cfg, W, prompt, dict(zip(rows, torch.cat(feats_all))), grids)
        # A video (frames at VIDEO_FPS, sampled to 2 per second) after an image in one prompt.
        frames = [Image.open(os.path.join(img_dir, n)) for n in video_files]
        vpatches, vgrid, sec, idx = ref.preprocess_video(frames, VIDEO_FPS, PROCESSOR)
        vfeats = ref.vision(cfg, W, vpatches, [vgrid])
        prompt = [1] + text_tokens(4, gen) + [VSTART, IMAGE, VEND] + text_tokens(2, gen) + \
            [VSTART, VIDEO, VEND] + text_tokens(3, gen)
        prompt = expand(expand(prompt, IMAGE, [grids[0][1] * grids[0][2] // 4]), VIDEO,
                        [vgrid[0] * vgrid[1] * vgrid[2] // 4])
        emb = {}
        irows = [i for i, t in enumerate(prompt) if t == IMAGE]
        vrows = [i for i, t in enumerate(prompt) if t == VIDEO]
        emb.update(zip(irows, feats_all[0]))
        emb.update(zip(vrows, vfeats))
        vc = case_for(cfg, W, prompt, emb, [grids[0]], [vgrid], [sec])
        vc.update(files=video_files, fps=VIDEO_FPS, sampled=idx, grid=list(vgrid),
                  second_per_grid=sec, patches=vpatches.reshape(-1).tolist(),
                  features=vfeats.reshape(-1).tolist(), image=image_specs[0][0])
        f["video"] = vc

        # Chat (HTTP and gRPC): the images first in the user message, then text, rendered by
        # jinja2, tokenized, each <|image_pad|> expanded to its image's merged grid.
        write_tokenizer(os.path.join(out, name))
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "image"}, {"type": "text", "text": "What differs?"}]}]
        rendered = render_chat(messages)
        ids = expand(tokenize(rendered), IMAGE, [t * h * w // 4 for t, h, w in grids])
        rows = [i for i, t in enumerate(ids) if t == IMAGE]
        chat = case_for(cfg, W, ids, dict(zip(rows, torch.cat(feats_all))), grids)
        chat.update(rendered=rendered, text="What differs?",
                    files=[os.path.join(img_dir, n) for n, _, _ in image_specs])
        f["chat"] = chat
        # Chat with a video (given as frames) then text.
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
        rendered = render_chat(messages)
        ids = expand(tokenize(rendered), VIDEO, [vgrid[0] * vgrid[1] * vgrid[2] // 4])
        rows = [i for i, t in enumerate(ids) if t == VIDEO]
        vchat = case_for(cfg, W, ids, dict(zip(rows, vfeats)), [], [vgrid], [sec])
        vchat.update(rendered=rendered, text="What moves?", fps=VIDEO_FPS,
                     files=[os.path.join(img_dir, n) for n in video_files])
        f["video_chat"] = vchat
        fixtures[name] = f
        print(f"{name}: text {f['text']['ids']}, mrope {f['mrope_embeds']['ids']}, grids {grids}")
    with open(os.path.join(out, "fixtures.json"), "w") as fh:
        json.dump(fixtures, fh)


def ref_patch_dim(cfg):
    v = cfg["vision_config"]
    return 3 * v["temporal_patch_size"] * v["patch_size"] ** 2


if __name__ == "__main__":
    main()
