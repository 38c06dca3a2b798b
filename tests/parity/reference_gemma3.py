#!/usr/bin/env python3
"""Independent PyTorch reference for Gemma 3's language model (Gemma3ForCausalLM and the
text half of Gemma3ForConditionalGeneration).

Written from Hugging Face transformers' modeling_gemma3.py (Gemma3TextScaledWordEmbedding,
Gemma3RMSNorm, Gemma3Attention, Gemma3DecoderLayer, Gemma3ForCausalLM and the token-type
mask of Gemma3Model) in plain torch, without a KV cache: every greedy step recomputes the
whole sequence with an explicit mask. It shares no code with the C++ engine.

What it computes, as transformers does:
  * embeddings times sqrt(hidden_size), the factor rounded to the embedding's stored dtype;
  * RMSNorm in fp32 times (1 + weight); q/k RMSNorm per head; norms before and after both
    the attention and the MLP, each sublayer output normed before the residual add;
  * attention scale query_pre_attn_scalar ** -0.5; attn_logit_softcapping is NOT applied
    (Gemma3Attention never passes it to the attention function);
  * sliding-window layers (layer_types, else every sliding_window_pattern-th layer is
    global) see keys j with i - window < j <= i and use RoPE base rope_local_base_freq
    without scaling; global layers use rope_theta with rope_scaling;
  * image tokens (token type 1) also see every token of their own image (a contiguous run
    of image tokens), later ones included: the mask is (causal [& window]) | same image;
  * GELU-tanh gated MLP; final logits soft-capped by final_logit_softcapping when set.

For Gemma3ForConditionalGeneration (from modeling_gemma3.py's Gemma3MultiModalProjector and
Gemma3Model, siglip's SiglipVisionTransformer, image_processing_gemma3.py and
processing_gemma3.py): SigLIP's last_hidden_state (post_layernorm applied), AvgPool2d over
k x k patch windows down to mm_tokens_per_image, RMSNorm x (1 + mm_soft_emb_norm), times
mm_input_projection_weight [vision, text]; those rows replace the image tokens' (scaled)
embeddings; the processor expands each <start_of_image> to "\n\n", <start_of_image>,
mm_tokens_per_image image tokens, <end_of_image>, "\n\n".
"""
import math

import torch

TEXT_DEFAULTS = dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216,
                     num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                     head_dim=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                     query_pre_attn_scalar=256, sliding_window=4096,
                     final_logit_softcapping=None, attn_logit_softcapping=None,
                     rope_scaling=None, rope_local_base_freq=10000.0, sliding_window_pattern=6,
                     tie_word_embeddings=True)


def text_config(cfg):
    """The language model's settings with Gemma3TextConfig's defaults filled in."""
    c = dict(TEXT_DEFAULTS)
    c.update({k: v for k, v in cfg.items() if v is not None or k in c})
    if not c.get("layer_types"):
        n = c["sliding_window_pattern"]
        c["layer_types"] = ["sliding_attention" if (i + 1) % n else "full_attention"
                            for i in range(c["num_hidden_layers"])]
    return c


def gemma_norm(x, w, eps):
    x = x.float()
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * (1.0 + w.float())


def inv_freq(dim, base, scaling):
    exps = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv = 1.0 / (base ** exps)
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "linear":
            inv = inv / scaling["factor"]
        elif kind != "default":
            raise ValueError(f"rope_scaling {kind} not covered by this reference")
    return inv


def rotate(x, cos, sin):
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos + rot * sin


def image_groups(token_types):
    """Per position: the index of its image (a run of token type 1), or -1 for text."""
    groups, g, prev = [], -1, 0
    for t in token_types:
        if t == 1 and prev != 1:
            g += 1
        groups.append(g if t == 1 else -1)
        prev = t
    return torch.tensor(groups)


def masks(c, T, token_types=None, bidirectional=True):
    """Additive masks {layer type: [T, T]}; image tokens see their whole image when
    `bidirectional` (a causal variant exists so tests can show the difference matters)."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    causal = j <= i
    sliding = causal & (j > i - c["sliding_window"])
    extra = torch.zeros(T, T, dtype=torch.bool)
    if token_types is not None and bidirectional:
        g = image_groups(token_types)
        extra = (g[:, None] >= 0) & (g[:, None] == g[None, :])
    out = {}
    for kind, allowed in (("full_attention", causal), ("sliding_attention", sliding)):
        out[kind] = torch.zeros(T, T).masked_fill(~(allowed | extra), float("-inf"))
    return out


def forward(cfg, W, ids, prefix="model.", embed_dtype=torch.float32, embeds=None,
            token_types=None, bidirectional=True, lm_head=None, attn_softcap=False):
    """Logits [len(ids), vocab] (fp32). `embeds` ({position: vector}) replaces the scaled
    embeddings of those positions (image soft tokens); `token_types` marks them with 1.
    `attn_softcap` applies attn_logit_softcapping as Gemma 2 does (transformers' Gemma 3 does
    not; the fixtures use it only to show the setting would matter)."""
    c = text_config(cfg)
    H, nh, nkv, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    eps = c["rms_norm_eps"]
    T = len(ids)
    pos = torch.arange(T, dtype=torch.float32)
    rope = {}
    for kind, base, scaling in (("full_attention", c["rope_theta"], c["rope_scaling"]),
                                ("sliding_attention", c["rope_local_base_freq"], None)):
        f = pos[:, None] * inv_freq(hd, base, scaling)[None, :]
        e = torch.cat((f, f), dim=-1)
        rope[kind] = (e.cos(), e.sin())
    mask = masks(c, T, token_types, bidirectional)

    scale = torch.tensor(H ** 0.5).to(embed_dtype).float()
    x = W[prefix + "embed_tokens.weight"][torch.tensor(ids)] * scale
    if embeds:
        x = x.clone()
        for p, v in embeds.items():
            x[p] = v
    for l in range(c["num_hidden_layers"]):
        p = f"{prefix}layers.{l}."
        kind = c["layer_types"][l]
        h = gemma_norm(x, W[p + "input_layernorm.weight"], eps)
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q = gemma_norm(q, W[p + "self_attn.q_norm.weight"], eps)
        k = gemma_norm(k, W[p + "self_attn.k_norm.weight"], eps)
        cos, sin = rope[kind]
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        scores = (q @ k.transpose(1, 2)) * (c["query_pre_attn_scalar"] ** -0.5)
        if attn_softcap and c.get("attn_logit_softcapping"):
            cap = c["attn_logit_softcapping"]
            scores = torch.tanh(scores / cap) * cap
        scores = scores + mask[kind]
        a = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(T, nh * hd)
        a = a @ W[p + "self_attn.o_proj.weight"].T
        x = x + gemma_norm(a, W[p + "post_attention_layernorm.weight"], eps)
        h = gemma_norm(x, W[p + "pre_feedforward_layernorm.weight"], eps)
        g = torch.nn.functional.gelu(h @ W[p + "mlp.gate_proj.weight"].T, approximate="tanh")
        m = (g * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[p + "mlp.down_proj.weight"].T
        x = x + gemma_norm(m, W[p + "post_feedforward_layernorm.weight"], eps)
    x = gemma_norm(x, W[prefix + "norm.weight"], eps)
    head = W[lm_head] if lm_head and lm_head in W else W[prefix + "embed_tokens.weight"]
    logits = x @ head.T
    cap = c.get("final_logit_softcapping")
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def greedy(cfg, W, prompt, n, **kw):
    ids = list(prompt)
    types = kw.pop("token_types", None)
    out, lps = [], []
    for _ in range(n):
        tt = None if types is None else list(types) + [0] * (len(ids) - len(types))
        logits = forward(cfg, W, ids, token_types=tt, **kw)[-1]
        tok = int(torch.argmax(logits))
        lps.append(float(torch.log_softmax(logits, dim=-1)[tok]))
        out.append(tok)
        ids.append(tok)
    return out, lps


# ---------------------------------------------------------------------------------------
# Gemma3ForConditionalGeneration: image processor, vision tower + projector, prompt markup


def gemma3_pixel_values(pil_image, pcfg):
    """Gemma3ImageProcessor without pan-and-scan: RGB, PIL resize to size (BILINEAR unless
    `resample` says otherwise), uint8 * rescale_factor in float64 then float32, (x - mean) /
    std in float32, channels first."""
    import numpy as np
    from PIL import Image
    img = pil_image.convert("RGB") if pil_image.mode != "RGB" else pil_image
    size = pcfg.get("size", {"height": 224, "width": 224})
    arr = np.array(img)
    arr = np.array(Image.fromarray(arr).resize((size["width"], size["height"]),
                                               resample=pcfg.get("resample", 2)))
    arr = (arr.astype(np.float64) * pcfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    mean = np.array(pcfg.get("image_mean", [0.5] * 3), dtype=np.float32)
    std = np.array(pcfg.get("image_std", [0.5] * 3), dtype=np.float32)
    arr = ((arr - mean) / std).astype(np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def siglip_last_hidden_state(vc, W, prefix, pixel_values):
    """SiglipVisionTransformer.last_hidden_state: Conv2d patches (+ bias) + position
    embeddings, pre-LN encoder layers, post_layernorm."""
    import torch.nn.functional as F
    d, p, eps = vc["hidden_size"], vc["patch_size"], vc.get("layer_norm_eps", 1e-6)
    heads = vc["num_attention_heads"]
    hd = d // heads
    x = F.conv2d(pixel_values, W[prefix + "embeddings.patch_embedding.weight"],
                 W[prefix + "embeddings.patch_embedding.bias"], stride=p)
    x = x.flatten(2).transpose(1, 2) + W[prefix + "embeddings.position_embedding.weight"]
    B, S, _ = x.shape

    def ln(t, name):
        return F.layer_norm(t, (d,), W[name + ".weight"], W[name + ".bias"], eps)

    def lin(t, name):
        return t @ W[name + ".weight"].T + W[name + ".bias"]

    for l in range(vc["num_hidden_layers"]):
        q_ = f"{prefix}encoder.layers.{l}."
        h = ln(x, q_ + "layer_norm1")
        q, k, v = (lin(h, q_ + f"self_attn.{n}").view(B, S, heads, hd).transpose(1, 2)
                   for n in ("q_proj", "k_proj", "v_proj"))
        a = torch.softmax((q @ k.transpose(-1, -2)) * hd ** -0.5, dim=-1) @ v
        x = x + lin(a.transpose(1, 2).reshape(B, S, d), q_ + "self_attn.out_proj")
        h = ln(x, q_ + "layer_norm2")
        h = F.gelu(lin(h, q_ + "mlp.fc1"), approximate="tanh")
        x = x + lin(h, q_ + "mlp.fc2")
    return ln(x, prefix + "post_layernorm")


def image_features(cfg, W, names, pixel_values):
    """Gemma3Model.get_image_features: (last_hidden_state, projected [B, tokens, text H])."""
    vc = cfg["vision_config"]
    last = siglip_last_hidden_state(vc, W, names["vision"], pixel_values)
    B, S, D = last.shape
    grid = vc["image_size"] // vc["patch_size"]
    side = int(cfg.get("mm_tokens_per_image", 256) ** 0.5)
    k = grid // side
    x = last.transpose(1, 2).reshape(B, D, grid, grid)
    x = torch.nn.functional.avg_pool2d(x, kernel_size=k, stride=k).flatten(2).transpose(1, 2)
    x = gemma_norm(x, W[names["projector"] + "mm_soft_emb_norm.weight"], vc.get("layer_norm_eps", 1e-6))
    return last, x @ W[names["projector"] + "mm_input_projection_weight"]


def expand_prompt(cfg, prompt, newline2):
    """Gemma3Processor's text expansion done on token ids: each <start_of_image> becomes
    "\\n\\n", <start_of_image>, mm_tokens_per_image image tokens, <end_of_image>, "\\n\\n"."""
    boi, eoi, img = cfg["boi_token_index"], cfg["eoi_token_index"], cfg["image_token_index"]
    n = cfg.get("mm_tokens_per_image", 256)
    out = []
    for t in prompt:
        out += [newline2, boi] + [img] * n + [eoi, newline2] if t == boi else [t]
    return out


def greedy_with_images(cfg, W, names, expanded, pixel_values, n, embed_dtype, bidirectional=True):
    """Greedy continuation of Gemma3ForConditionalGeneration over an expanded prompt."""
    _, feats = image_features(cfg, W, names, pixel_values)
    feats = feats.reshape(-1, feats.shape[-1])
    img = cfg["image_token_index"]
    pos = [i for i, t in enumerate(expanded) if t == img]
    assert len(pos) == feats.shape[0]
    embeds = {p: feats[i] for i, p in enumerate(pos)}
    types = [1 if t == img else 0 for t in expanded]
    ids = list(expanded)
    out, lps = [], []
    for _ in range(n):
        tt = types + [0] * (len(ids) - len(types))
        logits = forward(cfg["text_config"], W, ids, prefix=names["text"], embed_dtype=embed_dtype,
                         embeds=embeds, token_types=tt, bidirectional=bidirectional)[-1]
        tok = int(torch.argmax(logits))
        lps.append(float(torch.log_softmax(logits, dim=-1)[tok]))
        out.append(tok)
        ids.append(tok)
    return out, lps
