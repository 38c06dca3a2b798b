#!/usr/bin/env python3
"""Writes a random-weight Gemma3ForConditionalGeneration checkpoint for benchmarks (BF16):
Gemma 3's vision side at full size — a SigLIP so400m/14 tower at 896 px (27 layers, width
1152, 4,096 patches) average-pooled to 256 image tokens — on a ~110M-parameter Gemma 3 text
model (hidden 768, 12 layers; the real ones are 1-27B, too large for a CPU benchmark), its
preprocessor_config.json (Gemma3ImageProcessor), a minimal tokenizer.json (byte fallback and
newline runs, which Gemma 3's image markup needs) and a 640x480 JPEG to feed it.

usage: make_random_gemma3.py OUT_DIR     (run with /usr/bin/python3: numpy, PIL)
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "image"))
from make_random_llama import write_random_bf16  # noqa: E402
import make_reference as image_reference  # noqa: E402

VISION = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
              num_hidden_layers=27, num_attention_heads=16, image_size=896, patch_size=14,
              num_channels=3, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
              vision_use_head=False)
TEXT = dict(model_type="gemma3_text", vocab_size=32064, hidden_size=768, intermediate_size=2048,
            num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4, head_dim=64,
            query_pre_attn_scalar=64, sliding_window=512, sliding_window_pattern=6,
            rope_theta=1000000.0, rope_local_base_freq=10000.0, rms_norm_eps=1e-6,
            hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192)
BOI, EOI, IMG = 32000, 32001, 32002


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cfg = dict(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
               text_config=TEXT, vision_config=VISION, mm_tokens_per_image=256,
               boi_token_index=BOI, eoi_token_index=EOI, image_token_index=IMG,
               torch_dtype="bfloat16", bos_token_id=2, eos_token_id=1)
    H, I, V = TEXT["hidden_size"], TEXT["intermediate_size"], TEXT["vocab_size"]
    nh, nkv, hd = TEXT["num_attention_heads"], TEXT["num_key_value_heads"], TEXT["head_dim"]
    d, vi, p = VISION["hidden_size"], VISION["intermediate_size"], VISION["patch_size"]
    patches = (VISION["image_size"] // p) ** 2
    t, v, j = "language_model.model.", "vision_tower.vision_model.", "multi_modal_projector."
    shapes = {t + "embed_tokens.weight": (V, H), t + "norm.weight": (H,)}
    for l in range(TEXT["num_hidden_layers"]):
        q = f"{t}layers.{l}."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            shapes[q + n + ".weight"] = (H,)
        shapes.update({q + "self_attn.q_proj.weight": (nh * hd, H),
                       q + "self_attn.k_proj.weight": (nkv * hd, H),
                       q + "self_attn.v_proj.weight": (nkv * hd, H),
                       q + "self_attn.o_proj.weight": (H, nh * hd),
                       q + "self_attn.q_norm.weight": (hd,), q + "self_attn.k_norm.weight": (hd,),
                       q + "mlp.gate_proj.weight": (I, H), q + "mlp.up_proj.weight": (I, H),
                       q + "mlp.down_proj.weight": (H, I)})
    shapes.update({v + "embeddings.patch_embedding.weight": (d, 3, p, p),
                   v + "embeddings.patch_embedding.bias": (d,),
                   v + "embeddings.position_embedding.weight": (patches, d),
                   v + "post_layernorm.weight": (d,), v + "post_layernorm.bias": (d,)})
    for l in range(VISION["num_hidden_layers"]):
        q = f"{v}encoder.layers.{l}."
        for n in ("layer_norm1", "layer_norm2"):
            shapes[q + n + ".weight"] = (d,)
            shapes[q + n + ".bias"] = (d,)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[q + f"self_attn.{n}.weight"] = (d, d)
            shapes[q + f"self_attn.{n}.bias"] = (d,)
        shapes.update({q + "mlp.fc1.weight": (vi, d), q + "mlp.fc1.bias": (vi,),
                       q + "mlp.fc2.weight": (d, vi), q + "mlp.fc2.bias": (d,)})
    shapes.update({j + "mm_soft_emb_norm.weight": (d,), j + "mm_input_projection_weight": (d, H)})
    params = write_random_bf16(out, cfg, shapes, seed=0)
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump({"image_processor_type": "Gemma3ImageProcessor", "do_resize": True,
                   "size": {"height": 896, "width": 896}, "resample": 2, "do_rescale": True,
                   "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3,
                   "image_std": [0.5] * 3, "do_pan_and_scan": None}, f, indent=2)
    vocab = {f"<0x{b:02X}>": 3 + b for b in range(256)}
    vocab.update({"\n": 259, "\n\n": 260, "<pad>": 0, "<eos>": 1, "<bos>": 2,
                  "<start_of_image>": BOI, "<end_of_image>": EOI, "<image_soft_token>": IMG})
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "added_tokens": [
            {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for c, i in vocab.items() if c.startswith("<") and not c.startswith("<0x")],
            "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "vocab": vocab, "merges": ["\n \n"], "byte_fallback": True,
                      "unk_token": None, "fuse_unk": False}}, f)
    from PIL import Image
    path = os.path.join(out, "photo.jpg")
    Image.fromarray(image_reference.photo(640, 480, 5)).save(path, "JPEG", quality=90)
    print(f"wrote {out}: {params / 1e6:.0f}M parameters, 256 image tokens; image {path}")


if __name__ == "__main__":
    main()
