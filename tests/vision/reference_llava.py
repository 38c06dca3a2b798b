#!/usr/bin/env python3
"""Independent PyTorch reference for LLaVA (LlavaForConditionalGeneration).

torch.nn modules written from the architecture description, in the module layout of
Hugging Face transformers so that a checkpoint's tensor names load into them strictly:

  vision tower   CLIP: Conv2d patch embedding (no bias) + class embedding + position
                 embeddings over num_patches + 1, pre_layrnorm; SigLIP: Conv2d with bias,
                 position embeddings over num_patches, no class token, no pre-norm.
                 Encoder layers: LN1 -> q/k/v (bias) -> softmax(q k^T / sqrt(d)) v -> out_proj
                 -> residual; LN2 -> fc1 -> act -> fc2 -> residual. hidden_states[0] is the
                 embeddings output (after pre_layrnorm), hidden_states[i] the output of
                 layer i; post_layernorm is loaded but, as in LLaVA, never applied.
  features       hidden_states[vision_feature_layer] (a list is concatenated along the
                 hidden dim); "default" drops each image's first row, "full" keeps all.
  projector      linear_1 -> act -> linear_2.
  language model Llama / Mistral / Qwen2 decoder (explicit causal mask, rotate-half RoPE,
                 no KV cache): the embeddings of the prompt's image placeholder tokens are
                 replaced, in order, by the projected image features.

It shares no code with the C++ engine; tools/parity/hf_llava_fixtures.py produces the same
fixtures from transformers itself on hosts that have it.
"""
import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": lambda x: F.gelu(x),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}

# Tensor-name prefixes of transformers' two LLaVA layouts.
LAYOUTS = {
    "legacy": dict(text="language_model.model.", lm_head="language_model.lm_head.weight",
                   vision="vision_tower.vision_model.", projector="multi_modal_projector."),
    "current": dict(text="model.language_model.", lm_head="lm_head.weight",
                    vision="model.vision_tower.vision_model.", projector="model.multi_modal_projector."),
}


# ---------------------------------------------------------------------------------------
# Vision tower


class VisionEmbeddings(nn.Module):
    def __init__(self, vc):
        super().__init__()
        self.clip = vc["model_type"] == "clip_vision_model"
        d, p = vc["hidden_size"], vc["patch_size"]
        self.num_patches = (vc["image_size"] // p) ** 2
        if self.clip:
            self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(vc.get("num_channels", 3), d, kernel_size=p, stride=p,
                                         bias=not self.clip)
        self.position_embedding = nn.Embedding(self.num_patches + (1 if self.clip else 0), d)

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        x = self.patch_embedding(pixel_values)  # [B, D, gy, gx]
        x = x.flatten(2).transpose(1, 2)  # [B, gy * gx, D], row-major over the grid
        if self.clip:
            cls = self.class_embedding.view(1, 1, -1).expand(b, 1, -1)
            x = torch.cat([cls, x], dim=1)
        return x + self.position_embedding.weight.unsqueeze(0)


class SelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x):
        b, s, d = x.shape

        def split(t):
            return t.view(b, s, self.heads, self.hd).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.softmax((q @ k.transpose(-1, -2)) * self.hd ** -0.5, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).reshape(b, s, d))


class VisionMLP(nn.Module):
    def __init__(self, d, inter, act):
        super().__init__()
        self.fc1 = nn.Linear(d, inter)
        self.fc2 = nn.Linear(inter, d)
        self.act = ACTIVATIONS[act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, vc):
        super().__init__()
        d, eps = vc["hidden_size"], vc["layer_norm_eps"]
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.self_attn = SelfAttention(d, vc["num_attention_heads"])
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = VisionMLP(d, vc["intermediate_size"], vc["hidden_act"])

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, vc):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(vc) for _ in range(vc["num_hidden_layers"]))


class VisionTower(nn.Module):
    """transformers' CLIPVisionTransformer / SiglipVisionTransformer (the `vision_model`)."""

    def __init__(self, vc):
        super().__init__()
        d, eps = vc["hidden_size"], vc["layer_norm_eps"]
        self.embeddings = VisionEmbeddings(vc)
        if self.embeddings.clip:
            self.pre_layrnorm = nn.LayerNorm(d, eps=eps)
        self.encoder = Encoder(vc)
        self.post_layernorm = nn.LayerNorm(d, eps=eps)  # loaded, never used by LLaVA

    def hidden_states(self, pixel_values):
        x = self.embeddings(pixel_values)
        if self.embeddings.clip:
            x = self.pre_layrnorm(x)
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return states


class Projector(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        layers = cfg["vision_feature_layer"]
        k = len(layers) if isinstance(layers, list) else 1
        d, h = cfg["vision_config"]["hidden_size"], cfg["text_config"]["hidden_size"]
        bias = cfg.get("multimodal_projector_bias", True)
        self.linear_1 = nn.Linear(d * k, h, bias=bias)
        self.linear_2 = nn.Linear(h, h, bias=bias)
        self.act = ACTIVATIONS[cfg.get("projector_hidden_act", "gelu")]

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


# ---------------------------------------------------------------------------------------
# Language model (Llama family)


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class DecoderAttention(nn.Module):
    def __init__(self, tc):
        super().__init__()
        h, nh = tc["hidden_size"], tc["num_attention_heads"]
        self.nh, self.nkv = nh, tc.get("num_key_value_heads", nh)
        self.hd = tc.get("head_dim") or h // nh
        qkv_bias = tc["model_type"] == "qwen2" or tc.get("attention_bias", False)
        o_bias = tc["model_type"] != "qwen2" and tc.get("attention_bias", False)
        self.q_proj = nn.Linear(h, self.nh * self.hd, bias=qkv_bias)
        self.k_proj = nn.Linear(h, self.nkv * self.hd, bias=qkv_bias)
        self.v_proj = nn.Linear(h, self.nkv * self.hd, bias=qkv_bias)
        self.o_proj = nn.Linear(self.nh * self.hd, h, bias=o_bias)

    def forward(self, x, cos, sin, mask):
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.nh, self.hd).transpose(0, 1)
        k = self.k_proj(x).view(t, self.nkv, self.hd).transpose(0, 1)
        v = self.v_proj(x).view(t, self.nkv, self.hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k, v = k.repeat_interleave(rep, dim=0), v.repeat_interleave(rep, dim=0)
        w = torch.softmax((q @ k.transpose(1, 2)) * self.hd ** -0.5 + mask, dim=-1)
        return self.o_proj((w @ v).transpose(0, 1).reshape(t, self.nh * self.hd))


class DecoderMLP(nn.Module):
    def __init__(self, tc):
        super().__init__()
        h, i = tc["hidden_size"], tc["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, tc):
        super().__init__()
        eps = tc["rms_norm_eps"]
        self.input_layernorm = RMSNorm(tc["hidden_size"], eps)
        self.self_attn = DecoderAttention(tc)
        self.post_attention_layernorm = RMSNorm(tc["hidden_size"], eps)
        self.mlp = DecoderMLP(tc)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nn.Module):
    """transformers' LlamaModel / MistralModel / Qwen2Model (the `language_model`)."""

    def __init__(self, tc):
        super().__init__()
        self.tc = tc
        self.embed_tokens = nn.Embedding(tc["vocab_size"], tc["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(tc) for _ in range(tc["num_hidden_layers"]))
        self.norm = RMSNorm(tc["hidden_size"], tc["rms_norm_eps"])

    def forward(self, embeds):
        tc = self.tc
        t = embeds.shape[0]
        hd = tc.get("head_dim") or tc["hidden_size"] // tc["num_attention_heads"]
        inv = 1.0 / (tc.get("rope_theta", 10000.0) **
                     (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
        allowed = j <= i
        if tc["model_type"] == "mistral" and tc.get("sliding_window"):
            allowed = allowed & (j > i - tc["sliding_window"])
        mask = torch.zeros(t, t).masked_fill(~allowed, float("-inf"))
        x = embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


# ---------------------------------------------------------------------------------------
# LLaVA


def _strip(weights, prefix):
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


class Llava:
    def __init__(self, cfg, weights):
        """cfg: config.json as a dict; weights: tensor name -> fp32 tensor (as stored)."""
        self.cfg = cfg
        layout = LAYOUTS["current" if "model.language_model.embed_tokens.weight" in weights else "legacy"]
        self.vision = VisionTower(cfg["vision_config"])
        self.projector = Projector(cfg)
        self.text = TextModel(cfg["text_config"])
        self.vision.load_state_dict(_strip(weights, layout["vision"]), strict=False)
        missing = set(self.vision.state_dict()) - set(_strip(weights, layout["vision"]))
        assert not missing, f"vision tower weights missing: {sorted(missing)}"
        self.projector.load_state_dict(_strip(weights, layout["projector"]), strict=True)
        self.text.load_state_dict(_strip(weights, layout["text"]), strict=True)
        tied = cfg["text_config"].get("tie_word_embeddings", False) or cfg.get("tie_word_embeddings", False)
        self.lm_head = self.text.embed_tokens.weight if tied else weights[layout["lm_head"]]
        self.layers = cfg["vision_feature_layer"]
        self.strategy = cfg.get("vision_feature_select_strategy", "default")
        self.image_token = cfg["image_token_index"]

    def selected_features(self, pixel_values):
        """One [num_images, tokens, D] tensor per feature layer."""
        states = self.vision.hidden_states(pixel_values)
        layers = self.layers if isinstance(self.layers, list) else [self.layers]
        picked = [states[l] for l in layers]
        if self.strategy == "default":
            picked = [s[:, 1:] for s in picked]
        return picked

    def image_embeds(self, pixel_values):
        """[num_images, tokens, text hidden]."""
        return self.projector(torch.cat(self.selected_features(pixel_values), dim=-1))

    def logits(self, ids, n_prompt, image_embeds):
        ids_t = torch.tensor(ids)
        x = self.text.embed_tokens(ids_t)
        # Only prompt positions hold images; a generated placeholder id embeds as a token.
        slots = (ids_t == self.image_token) & (torch.arange(len(ids)) < n_prompt)
        flat = image_embeds.reshape(-1, image_embeds.shape[-1])
        assert int(slots.sum()) == flat.shape[0], (int(slots.sum()), flat.shape)
        x = x.clone()
        x[slots] = flat
        return self.text(x) @ self.lm_head.T

    @torch.no_grad()
    def greedy(self, prompt, pixel_values, n):
        emb = self.image_embeds(pixel_values)
        ids, out, lps = list(prompt), [], []
        for _ in range(n):
            logits = self.logits(ids, len(prompt), emb)[-1]
            tok = int(torch.argmax(logits))
            lps.append(float(torch.log_softmax(logits, dim=-1)[tok]))
            out.append(tok)
            ids.append(tok)
        return out, lps


def tokens_per_image(cfg):
    vc = cfg["vision_config"]
    n = (vc["image_size"] // vc["patch_size"]) ** 2
    if vc["model_type"] == "clip_vision_model":
        n += 1
    if cfg.get("vision_feature_select_strategy", "default") == "default":
        n -= 1
    return n
