#!/usr/bin/env python3
"""Writes a random-weight Qwen2.5-VL checkpoint for benchmarks (BF16), the Hub's
preprocessor_config.json (min_pixels 3136, max_pixels 12845056) and a 640x480 JPEG.

The vision side is Qwen2.5-VL-3B/7B's tower as the Hub configures it (32 blocks, width 1280,
SwiGLU 3420, 16 heads, windows of 112 px, full attention in blocks 7/15/23/31, 2x2 merger)
with out_hidden_size matching the text model; the language model is a ~110M Qwen2 shape
(hidden 768, 12 layers, M-RoPE sections [16, 24, 24] of head_dim 128) because Qwen2.5-VL's
own 3B/7B language models do not fit a CPU benchmark. Names and configs are the Hub's.

usage: make_random_qwen_vl.py OUT_DIR   (Debian's python3 with torch, numpy, PIL)
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "qwen_vl"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "parity"))
import make_qwen_vl_checkpoints as mq  # noqa: E402
from make_checkpoints import write_safetensors  # noqa: E402

TEXT = dict(vocab_size=151936, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6,
            rope_theta=1000000.0, max_position_embeddings=32768, hidden_act="silu",
            use_sliding_window=False, sliding_window=32768, max_window_layers=12,
            bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True,
            rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
VISION = dict(depth=32, hidden_act="silu", hidden_size=1280, intermediate_size=3420,
              num_heads=16, in_chans=3, out_hidden_size=768, patch_size=14, spatial_merge_size=2,
              spatial_patch_size=14, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
              tokens_per_second=2, temporal_patch_size=2)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cfg = dict(architectures=["Qwen2_5_VLForConditionalGeneration"], model_type="qwen2_5_vl",
               **TEXT, vision_config=VISION, image_token_id=151655, video_token_id=151656,
               vision_start_token_id=151652, vision_end_token_id=151653, vision_token_id=151654)
    torch.manual_seed(0)
    W = mq.random_weights(cfg, torch.Generator().manual_seed(0))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(cfg, torch_dtype="bfloat16"), f, indent=2)
    proc = dict(mq.PROCESSOR, min_pixels=3136, max_pixels=12845056)
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(proc, f, indent=2)
    write_safetensors(os.path.join(out, "model.safetensors"), W, "BF16", torch.bfloat16)
    mq.photo(640, 480, 5).save(os.path.join(out, "photo.jpg"), quality=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
