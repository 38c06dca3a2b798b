#!/usr/bin/env python3
"""Writes a random-weight LLaVA checkpoint for benchmarks (BF16, two shards), its
preprocessor_config.json and a 640x480 JPEG to feed it.

usage: make_random_llava.py OUT_DIR [--tower vit-l-336|vit-b-224]

--tower vit-l-336 (default): LLaVA-1.5's vision side, a CLIP ViT-L/14 tower at 336 px
(24 layers, width 1024; feature layer -2, "default" strategy: 576 image tokens) and a GELU
projector, on a ~110M-parameter Llama text model (hidden 768, 12 layers; LLaVA-1.5's is a
7B/13B Vicuna, too large for a CPU benchmark). --tower vit-b-224: a CLIP ViT-B/16 at 224 px
(12 layers, width 768; 196 image tokens). Needs Debian's python3-torch, python3-numpy and
python3-pil (run with /usr/bin/python3).
"""
import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "..", "tests")
for sub in ("vision", "parity", "image"):
    sys.path.insert(0, os.path.join(TESTS, sub))
import make_vision_checkpoints as mv  # noqa: E402
import make_reference as image_reference  # noqa: E402

TOWERS = {
    "vit-l-336": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, image_size=336, patch_size=14),
    "vit-b-224": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, image_size=224, patch_size=16),
}
TEXT = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=32064,
            hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
            num_key_value_heads=4, rms_norm_eps=1e-5, rope_theta=10000.0,
            max_position_embeddings=4096, hidden_act="silu", tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tower", choices=sorted(TOWERS), default="vit-l-336")
    a = ap.parse_args()
    t = TOWERS[a.tower]
    vision = dict(model_type="clip_vision_model", num_channels=3, layer_norm_eps=1e-5,
                  hidden_act="quick_gelu", projection_dim=768, **t)
    tokens = (t["image_size"] // t["patch_size"]) ** 2
    cfg = mv.llava(TEXT, vision, image_token_index=32000, vision_feature_layer=-2,
                   vision_feature_select_strategy="default", projector_hidden_act="gelu",
                   multimodal_projector_bias=True, image_seq_length=tokens,
                   tie_word_embeddings=False)
    torch.manual_seed(0)
    W = mv.random_weights(cfg, "current", torch.Generator().manual_seed(0))
    mv.write_checkpoint(a.out, cfg, W, "bf16")
    size = t["image_size"]
    with open(os.path.join(a.out, "preprocessor_config.json"), "w") as f:
        json.dump(image_reference.clip_config(shortest=size, crop=(size, size)), f, indent=2)
    from PIL import Image
    path = os.path.join(a.out, "photo.jpg")
    Image.fromarray(image_reference.photo(640, 480, 5)).save(path, "JPEG", quality=90)
    params = sum(w.numel() for w in W.values())
    print(f"wrote {a.out}: {params / 1e6:.0f}M parameters, {tokens} image tokens; image {path}")


if __name__ == "__main__":
    main()
