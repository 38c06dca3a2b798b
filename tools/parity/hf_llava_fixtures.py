#!/usr/bin/env python3
"""LLaVA reference fixtures from Hugging Face transformers itself, for hosts that have it
(transformers >= 4.52, whose LlavaForConditionalGeneration loads both tensor-name layouts).

For every model of tests/vision/make_vision_checkpoints.py (same configs, same tensor-name
layout, same storage dtype, same number of images and prompt shape) this script

  1. builds LlavaForConditionalGeneration from a LlavaConfig with transformers' own
     CLIPVisionConfig / SiglipVisionConfig and Llama / Qwen2 / Mistral text configs, fills its
     parameters with random values of the same scales as the in-tree generator, and writes
     it with save_pretrained (transformers' config.json, safetensors, tied-weight handling,
     sharding for bf16);
  2. renames the saved tensors into the layout the in-tree model uses (legacy
     `language_model.model.*` or >= 4.52 `model.language_model.*`) when transformers wrote
     the other one, so both layouts stay covered whatever version runs this;
  3. reloads the directory with from_pretrained in fp32 (eager attention) and records
     - the selected vision features: vision_tower(pixel_values, output_hidden_states=True)
       .hidden_states[vision_feature_layer], first row dropped for "default";
     - the projector output from get_image_features (checked against the projector applied
       to those features);
     - greedy generation over a prompt with image_token_index already expanded to
       tokens_per_image placeholders per image: ids and log-probabilities of the raw logits.

fixtures.json has the format tests/vision/test_vision.cpp reads, so:

usage: hf_llava_fixtures.py OUT_DIR
Then:  IRIS_VISION_FIXTURES=OUT_DIR build/tests/vision/vision_tests
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "vision"))
from make_vision_checkpoints import DTYPES, MODELS, NEW_TOKENS, make_prompt  # noqa: E402
from reference_llava import LAYOUTS, tokens_per_image  # noqa: E402


def llava_config(cfg):
    c = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}
    text = dict(c.pop("text_config"))
    vision = dict(c.pop("vision_config"))
    text_cfg = transformers.AutoConfig.for_model(text.pop("model_type"), **text)
    vision_cfg = transformers.AutoConfig.for_model(vision.pop("model_type"), **vision)
    return transformers.LlavaConfig(text_config=text_cfg, vision_config=vision_cfg, **c)


@torch.no_grad()
def randomize(model, gen):
    for name, p in model.named_parameters():
        if "norm" in name:
            v = 1.0 + 0.1 * torch.randn(p.shape, generator=gen) if name.endswith("weight") \
                else 0.1 * torch.randn(p.shape, generator=gen)
        elif name.endswith("class_embedding"):
            v = 0.5 * torch.randn(p.shape, generator=gen)
        elif name.endswith("position_embedding.weight"):
            v = 0.3 * torch.randn(p.shape, generator=gen)
        elif name.endswith("embed_tokens.weight"):
            v = torch.randn(p.shape, generator=gen)
        elif name.endswith("lm_head.weight"):
            v = 0.3 * torch.randn(p.shape, generator=gen)
        elif name.endswith("bias") or p.dim() < 2:
            v = 0.1 * torch.randn(p.shape, generator=gen)
        else:
            fan_in = p[0].numel()
            v = 1.5 / fan_in ** 0.5 * torch.randn(p.shape, generator=gen)
        p.copy_(v)


def part_of(key):
    """(part, rest) of a tensor name in either layout; part in text/vision/projector/lm_head."""
    for layout in LAYOUTS.values():
        if key == layout["lm_head"]:
            return "lm_head", ""
        for part in ("vision", "projector", "text"):
            if key.startswith(layout[part]):
                return part, key[len(layout[part]):]
    return None, key


def rename_layout(d, layout):
    """Rewrites every safetensors file of `d` (and the index) with names in `layout`."""
    target = LAYOUTS[layout]

    def rename(key):
        part, rest = part_of(key)
        if part is None:
            return key
        return target["lm_head"] if part == "lm_head" else target[part] + rest

    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            path = os.path.join(d, fn)
            tensors = load_file(path)
            save_file({rename(k): v.contiguous() for k, v in tensors.items()}, path,
                      metadata={"format": "pt"})
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            idx = json.load(f)
        idx["weight_map"] = {rename(k): v for k, v in idx["weight_map"].items()}
        with open(index, "w") as f:
            json.dump(idx, f, indent=2)


def as_tensor(x):
    """get_image_features returns a tensor, a list of per-image tensors or a model output,
    depending on the transformers version."""
    if isinstance(x, torch.Tensor):
        return x
    if getattr(x, "pooler_output", None) is not None:
        return as_tensor(x.pooler_output)
    if isinstance(x, (list, tuple)):
        return torch.cat([as_tensor(t).reshape(-1, as_tensor(t).shape[-1]) for t in x])
    raise TypeError(f"unexpected image features {type(x)}")


def submodule(model, name):
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, name):
        return getattr(inner, name)
    return getattr(model, name)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = []
    for mi, (name, spec) in enumerate(MODELS.items()):
        cfg = spec["config"]
        dtype = DTYPES[spec["dtype"]][0]
        gen = torch.Generator().manual_seed(4321 + mi)
        model = transformers.LlavaForConditionalGeneration(llava_config(cfg)).float()
        randomize(model, gen)
        d = os.path.join(out, name)
        model.to(dtype).save_pretrained(d, safe_serialization=True,
                                        max_shard_size="200KB" if spec["dtype"] == "bf16" else "10GB")
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
        rename_layout(d, spec["layout"])

        ref = transformers.LlavaForConditionalGeneration.from_pretrained(
            d, torch_dtype=torch.float32, attn_implementation="eager")
        ref.eval()
        vc = cfg["vision_config"]
        n = spec["num_images"]
        pixels = torch.randn(n, vc["num_channels"], vc["image_size"], vc["image_size"], generator=gen)
        prompt = make_prompt(cfg, n, gen)
        tpi = tokens_per_image(cfg)
        layers = cfg["vision_feature_layer"]
        layers = layers if isinstance(layers, list) else [layers]
        strategy = cfg["vision_feature_select_strategy"]

        with torch.no_grad():
            hs = submodule(ref, "vision_tower")(pixels, output_hidden_states=True).hidden_states
            feats = [hs[l][:, 1:] if strategy == "default" else hs[l] for l in layers]
            embeds = as_tensor(ref.get_image_features(
                pixel_values=pixels, vision_feature_layer=cfg["vision_feature_layer"],
                vision_feature_select_strategy=strategy))
            embeds = embeds.reshape(n * tpi, -1)
            again = submodule(ref, "multi_modal_projector")(torch.cat(feats, dim=-1))
            assert torch.allclose(embeds, again.reshape(n * tpi, -1), atol=1e-5), \
                "get_image_features disagrees with projector(hidden_states[layer])"

            ref.generation_config.eos_token_id = None  # run all NEW_TOKENS steps
            ref.generation_config.pad_token_id = 0
            g = ref.generate(input_ids=torch.tensor([prompt]), pixel_values=pixels,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
        new = g.sequences[0, len(prompt):].tolist()
        assert len(new) == NEW_TOKENS, new
        lps = []
        for logits, tok in zip(g.logits, new):
            row = logits[0].float()
            assert int(torch.argmax(row)) == tok, "a logits processor changed the greedy pick"
            lps.append(float(torch.log_softmax(row, -1)[tok]))
        cases.append({
            "model": name,
            "num_images": n,
            "tokens_per_image": tpi,
            "pixel_values": pixels.flatten().tolist(),
            "pixel_shape": list(pixels.shape),
            "features": [f.reshape(-1, f.shape[-1]).flatten().tolist() for f in feats],
            "feature_dim": feats[0].shape[-1],
            "image_embeds": embeds.flatten().tolist(),
            "prompt_ids": prompt,
            "output_ids": new,
            "logprobs": lps,
        })
    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump({"reference": f"transformers {transformers.__version__} LlavaForConditionalGeneration",
                   "cases": cases}, f)
    print(f"wrote {len(cases)} LLaVA cases to {out}/fixtures.json")


if __name__ == "__main__":
    main()
