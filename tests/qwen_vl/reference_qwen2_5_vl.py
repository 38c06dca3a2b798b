#!/usr/bin/env python3
"""Independent PyTorch reference for Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration).

Written from the computations of transformers' modeling_qwen2_5_vl.py and
image_processing_qwen2_vl.py, in plain functions over a dict of tensors named as the Hub's
checkpoints name them (model.*, lm_head.weight, visual.*). It shares no code with the C++
engine. Everything runs in fp32 and without a KV cache: each greedy step recomputes the whole
sequence, with decode positions index + rope delta exactly as generation does.

  preprocess(pil_image, proc)   smart_resize -> PIL bicubic -> rescale/normalize -> patches
  vision(cfg, W, patches, grid) patch embed, 2-D rotary, window/full attention, merger
  rope_index(cfg, ids, grids)   the 3 x T M-RoPE positions and the rope delta
  logits(cfg, W, ids, embeds)   the language model
  greedy(...)                   greedy continuation with log-probabilities
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------- image processor

def smart_resize(height, width, factor, min_pixels, max_pixels):
    """Target (height, width): multiples of factor, area within [min_pixels, max_pixels],
    aspect ratio kept as closely as possible (Python's round: half to even)."""
    if height < 10 or width < 10:
        raise ValueError("image too small")
    if max(height, width) / min(height, width) > 200:
        raise ValueError("aspect ratio too large")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = math.floor(height / beta / factor) * factor
        w = math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def normalized_frames(pil_images, proc, size=None):
    """[N, C, H, W] float32 frames: RGB, resized with PIL bicubic to `size` (or smart_resize
    of the first frame), scaled by 1/255 and normalised with the processor's mean/std."""
    patch, merge = proc.get("patch_size", 14), proc.get("merge_size", 2)
    first = pil_images[0]
    if size is None:
        size = smart_resize(first.height, first.width, patch * merge,
                            proc.get("min_pixels", 56 * 56), proc.get("max_pixels", 28 * 28 * 1280))
    rh, rw = size
    mean = np.array(proc.get("image_mean", CLIP_MEAN), dtype=np.float32)
    std = np.array(proc.get("image_std", CLIP_STD), dtype=np.float32)
    scale = proc.get("rescale_factor", 1 / 255)
    out = []
    for im in pil_images:
        im = im.convert("RGB")
        if (im.height, im.width) != (rh, rw):
            im = im.resize((rw, rh), resample=proc.get("resample", 3))
        # transformers rescales in float64 and casts to float32, then normalizes in float32
        a = (np.asarray(im).astype(np.float64) * scale).astype(np.float32)
        a = (a - mean) / std
        out.append(a.transpose(2, 0, 1))
    return np.stack(out).astype(np.float32), (rh, rw)


def patchify(frames, proc):
    """Frames [N, C, H, W] -> (patches [t*h*w, C*T*P*P], (t, h, w)) in the processor's order:
    merge blocks row-major, the merge_size^2 patches of a block row-major inside it, each
    patch flattened as (channel, frame, y, x). A single frame is repeated to fill a temporal
    patch; a video's frame count must already be a multiple of temporal_patch_size."""
    P, M, TP = proc.get("patch_size", 14), proc.get("merge_size", 2), proc.get("temporal_patch_size", 2)
    x = torch.from_numpy(frames)
    if x.shape[0] == 1:
        x = x.expand(TP, -1, -1, -1)
    n, c, H, W = x.shape
    gt, gh, gw = n // TP, H // P, W // P
    x = x.reshape(gt, TP, c, gh // M, M, P, gw // M, M, P)
    # axes: t, tp, c, bh, mh, py, bw, mw, px  ->  t, bh, bw, mh, mw, c, tp, py, px
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * TP * P * P).contiguous(), (gt, gh, gw)


def sample_frame_indices(total, source_fps, fps=2.0, temporal_patch_size=2, min_frames=4,
                         max_frames=768):
    """Qwen2VLVideoProcessor.sample_frames with `fps`: about `fps` frames per second of the
    video, at least min_frames, at most max_frames and the frames there are, a multiple of
    the temporal patch size, spread evenly (torch.arange with a float step, truncated)."""
    tp = temporal_patch_size
    max_frames = math.floor(min(max_frames, total) / tp) * tp
    n = total / source_fps * fps
    n = min(max(n, min_frames), max_frames, total)
    n = math.floor(n / tp) * tp
    if n <= 0:
        raise ValueError("video too short to sample")
    return torch.arange(0, total, total / n).int().tolist()


def preprocess_video(pil_frames, source_fps, proc, fps=2.0):
    """(patches, grid, second_per_grid_t, sampled indices) of a clip: frames sampled as the
    video processor does, each preprocessed as the Pillow-based Qwen2VLImageProcessor handles
    videos (one smart_resize for the clip), the last frame repeated to fill a temporal patch,
    and second_per_grid_t = temporal_patch_size / fps as Qwen2_5_VLProcessor sets it."""
    tp = proc.get("temporal_patch_size", 2)
    idx = sample_frame_indices(len(pil_frames), source_fps, fps, tp)
    patches, grid, sec = preprocess_sampled_video([pil_frames[i] for i in idx], proc, fps)
    return patches, grid, sec, idx


def preprocess_sampled_video(pil_frames, proc, fps=2.0):
    """preprocess_video's second half, for frames already sampled (e.g. extracted from a video
    file at the indices sample_frame_indices gives): (patches, grid, second_per_grid_t)."""
    tp = proc.get("temporal_patch_size", 2)
    frames, _ = normalized_frames(pil_frames, proc)
    if frames.shape[0] % tp:
        pad = np.repeat(frames[-1:], tp - frames.shape[0] % tp, axis=0)
        frames = np.concatenate([frames, pad])
    patches, grid = patchify(frames, proc)
    return patches, grid, tp / fps


def preprocess(pil_image, proc):
    frames, _ = normalized_frames([pil_image], proc)
    return patchify(frames, proc)


# ---------------------------------------------------------------- vision tower

def rms(x, w, eps=1e-6):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def vision_rotary(vc, grids):
    """Per patch (in processor order) the rotary angles [N, head_dim / 2]: the first half of
    the frequencies rotate by the patch row, the second half by the patch column."""
    hd = vc["hidden_size"] // vc["num_heads"]
    dim = hd // 2
    inv = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    M = vc["spatial_merge_size"]
    rows = []
    for t, h, w in grids:
        r = torch.arange(h).view(h, 1).expand(h, w)
        c = torch.arange(w).view(1, w).expand(h, w)
        # processor order: merge block (bh, bw), then (mh, mw) inside it
        r = r.reshape(h // M, M, w // M, M).permute(0, 2, 1, 3).reshape(-1)
        c = c.reshape(h // M, M, w // M, M).permute(0, 2, 1, 3).reshape(-1)
        rows.append(torch.stack([r, c], dim=-1).repeat(t, 1))
    ids = torch.cat(rows).float()
    return torch.cat([ids[:, :1] * inv, ids[:, 1:] * inv], dim=-1)


def window_order(vc, grids):
    """(order of merge units after window grouping, window boundaries in patches). Windows
    are window_size / (patch * merge) merge units on a side, laid over each frame from the
    top-left; partial windows at the right and bottom edges hold what is left."""
    M, P = vc["spatial_merge_size"], vc["patch_size"]
    side = vc["window_size"] // M // P
    unit = M * M
    order, bounds, base = [], [0], 0
    for t, h, w in grids:
        lh, lw = h // M, w // M
        for ti in range(t):
            for wy in range(0, lh, side):
                for wx in range(0, lw, side):
                    n = 0
                    for y in range(wy, min(wy + side, lh)):
                        for x in range(wx, min(wx + side, lw)):
                            order.append(base + ti * lh * lw + y * lw + x)
                            n += 1
                    bounds.append(bounds[-1] + n * unit)
        base += t * lh * lw
    return torch.tensor(order), bounds


def attention_blocks(q, k, v, bounds, scale):
    """Bidirectional attention inside each [bounds[i], bounds[i+1]) block. q, k, v: [N, nh, d]."""
    out = torch.empty_like(q)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))
        att = torch.softmax((qs @ ks.transpose(1, 2)) * scale, dim=-1)
        out[a:b] = (att @ vs).transpose(0, 1)
    return out


def vision(cfg, W, patches, grids, prefix="visual."):
    """Merged image features [sum(t*h*w) / merge^2, out_hidden_size] for patches in processor
    order of the images with grids [(t, h, w), ...]."""
    vc = cfg["vision_config"]
    D, nh = vc["hidden_size"], vc["num_heads"]
    hd = D // nh
    M = vc["spatial_merge_size"]
    unit = M * M
    g = lambda n: W[prefix + n]
    x = patches.float() @ g("patch_embed.proj.weight").reshape(D, -1).t()
    ang = vision_rotary(vc, grids)
    order, win_bounds = window_order(vc, grids)
    N = x.shape[0]
    x = x.reshape(N // unit, unit, D)[order].reshape(N, D)
    ang = ang.reshape(N // unit, unit, -1)[order].reshape(N, -1)
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
    full_bounds = [0]
    for t, h, w in grids:
        for _ in range(t):
            full_bounds.append(full_bounds[-1] + h * w)
    full = set(vc.get("fullatt_block_indexes", [7, 15, 23, 31]))
    for l in range(vc["depth"]):
        p = f"blocks.{l}."
        h = rms(x, g(p + "norm1.weight"))
        qkv = (h @ g(p + "attn.qkv.weight").t() + g(p + "attn.qkv.bias")).reshape(N, 3, nh, hd)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        a = attention_blocks(q, k, v, full_bounds if l in full else win_bounds, hd ** -0.5)
        x = x + (a.reshape(N, D) @ g(p + "attn.proj.weight").t() + g(p + "attn.proj.bias"))
        h = rms(x, g(p + "norm2.weight"))
        gate = h @ g(p + "mlp.gate_proj.weight").t() + g(p + "mlp.gate_proj.bias")
        up = h @ g(p + "mlp.up_proj.weight").t() + g(p + "mlp.up_proj.bias")
        x = x + ((F.silu(gate) * up) @ g(p + "mlp.down_proj.weight").t() + g(p + "mlp.down_proj.bias"))
    m = rms(x, g("merger.ln_q.weight")).reshape(N // unit, unit * D)
    m = F.gelu(m @ g("merger.mlp.0.weight").t() + g("merger.mlp.0.bias"))
    m = m @ g("merger.mlp.2.weight").t() + g("merger.mlp.2.bias")
    out = torch.empty_like(m)
    out[order] = m  # back to processor order
    return out


# ---------------------------------------------------------------- M-RoPE positions

def rope_index(cfg, ids, image_grids=(), video_grids=(), second_per_grid_ts=None):
    """(positions [3, T] int64, delta) for one prompt as transformers' get_rope_index: media
    are found as <|vision_start|> followed by the image or video token; text continues from
    the largest position so far + 1; a media block takes (t * second_per_grid * tokens_per_
    second, row, column) of its merged grid offset by where it starts."""
    vc = cfg["vision_config"]
    M = vc["spatial_merge_size"]
    img, vid, start = cfg["image_token_id"], cfg["video_token_id"], cfg["vision_start_token_id"]
    ids = list(ids)
    kinds = [ids[i + 1] for i in range(len(ids) - 1) if ids[i] == start]
    kinds = [k for k in kinds if k in (img, vid)]
    if not kinds:
        pos = torch.arange(len(ids)).view(1, -1).expand(3, -1)
        return pos, 0
    parts, st, ii, vi = [], 0, 0, 0
    nxt = 0
    for kind in kinds:
        ed = ids.index(kind, st)
        if kind == img:
            t, h, w = image_grids[ii]
            step = 0.0
            ii += 1
        else:
            t, h, w = video_grids[vi]
            sec = 1.0 if second_per_grid_ts is None else second_per_grid_ts[vi]
            step = sec * vc.get("tokens_per_second", 4)
            vi += 1
        gh, gw = h // M, w // M
        text = ed - st
        parts.append(torch.arange(text).view(1, -1).expand(3, -1) + nxt)
        base = nxt + text
        tt = (torch.arange(t).view(-1, 1).expand(-1, gh * gw).double() * step).long().flatten()
        hh = torch.arange(gh).view(1, -1, 1).expand(t, -1, gw).flatten()
        ww = torch.arange(gw).view(1, 1, -1).expand(t, gh, -1).flatten()
        block = torch.stack([tt, hh, ww]) + base
        parts.append(block)
        nxt = int(block.max()) + 1
        st = ed + t * gh * gw
    if st < len(ids):
        parts.append(torch.arange(len(ids) - st).view(1, -1).expand(3, -1) + nxt)
    pos = torch.cat(parts, dim=1)
    return pos, int(pos.max()) + 1 - len(ids)


# ---------------------------------------------------------------- language model

def text_cfg(cfg):
    t = dict(cfg)
    t.update(cfg.get("text_config") or {})
    return t


def logits(cfg, W, ids, embeds=None, positions=None, prefix="model."):
    """Logits [T, vocab] of the token list `ids`; rows where embeds (dict row -> [H] tensor)
    is given take that embedding; positions [3, T] (default: 0..T-1 in all three rows)."""
    c = text_cfg(cfg)
    H, nh = c["hidden_size"], c["num_attention_heads"]
    nkv = c.get("num_key_value_heads", nh)
    hd = H // nh
    eps = c["rms_norm_eps"]
    T = len(ids)
    if positions is None:
        positions = torch.arange(T).view(1, -1).expand(3, -1)
    inv = 1.0 / (c.get("rope_theta", 1000000.0) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    # freqs per position row, then each frequency takes its section's row
    freqs = positions.float().unsqueeze(-1) * inv  # [3, T, hd/2]
    sec = c["rope_scaling"]["mrope_section"]
    which = torch.cat([torch.full((n,), j) for j, n in enumerate(sec)])
    f = freqs[which, :, torch.arange(hd // 2)].t()  # [T, hd/2]
    emb = torch.cat([f, f], dim=-1)
    cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
    g = lambda n: W[prefix + n]
    x = g("embed_tokens.weight")[torch.tensor(ids)].clone()
    if embeds:
        for r, e in embeds.items():
            x[r] = e
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(c["num_hidden_layers"]):
        p = f"layers.{l}."
        h = rms(x, g(p + "input_layernorm.weight"), eps)
        q = (h @ g(p + "self_attn.q_proj.weight").t() + g(p + "self_attn.q_proj.bias")).view(T, nh, hd)
        k = (h @ g(p + "self_attn.k_proj.weight").t() + g(p + "self_attn.k_proj.bias")).view(T, nkv, hd)
        v = (h @ g(p + "self_attn.v_proj.weight").t() + g(p + "self_attn.v_proj.bias")).view(T, nkv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q.transpose(0, 1) @ k.transpose(0, 1).transpose(1, 2)) / math.sqrt(hd) + mask
        a = (torch.softmax(s, dim=-1) @ v.transpose(0, 1)).transpose(0, 1).reshape(T, nh * hd)
        x = x + a @ g(p + "self_attn.o_proj.weight").t()
        h = rms(x, g(p + "post_attention_layernorm.weight"), eps)
        gate = h @ g(p + "mlp.gate_proj.weight").t()
        up = h @ g(p + "mlp.up_proj.weight").t()
        x = x + (F.silu(gate) * up) @ g(p + "mlp.down_proj.weight").t()
    x = rms(x, g("norm.weight"), eps)
    head = W.get("lm_head.weight", g("embed_tokens.weight"))
    return x @ head.t()


def greedy(cfg, W, ids, n_new, embeds=None, positions=None, delta=0, prefix="model."):
    """Greedy continuation (ids, log-probabilities) of `ids`: the prompt keeps `positions`,
    generated token i (index len(ids) + i) takes index + delta in all three rows."""
    ids = list(ids)
    T0 = len(ids)
    if positions is None:
        positions = torch.arange(T0).view(1, -1).expand(3, -1)
    out, lps = [], []
    for _ in range(n_new):
        extra = torch.arange(T0, len(ids)).view(1, -1).expand(3, -1) + delta
        pos = torch.cat([positions, extra], dim=1)
        lg = logits(cfg, W, ids, embeds, pos, prefix)[-1]
        lp = torch.log_softmax(lg.double(), dim=-1)
        t = int(torch.argmax(lg))
        out.append(t)
        lps.append(float(lp[t]))
        ids.append(t)
    return out, lps
