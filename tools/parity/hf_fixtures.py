#!/usr/bin/env python3
"""Reference fixtures from Hugging Face transformers itself, for hosts that have it.

Builds the same small random checkpoints as tests/parity/make_checkpoints.py but with
transformers (`AutoModelForCausalLM.from_config(...).save_pretrained(...)`, so weight
names, layouts and safetensors files are transformers' own), runs greedy generation in
fp32 and writes fixtures.json in the format tests/parity/check_generate.py reads.

usage: hf_fixtures.py OUT_DIR
Then:  tests/parity/check_generate.py build/server/iris OUT_DIR
"""
import json
import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "parity"))
from make_checkpoints import ARCHS, BASE, DTYPES, NEW_TOKENS, PROMPT_LENGTHS  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cases = []
    for ai, (arch, extra) in enumerate(ARCHS.items()):
        cfg_dict = dict(BASE, **extra)
        model_type = cfg_dict.pop("model_type")
        cfg = transformers.AutoConfig.for_model(model_type, **cfg_dict)
        torch.manual_seed(1234 + ai)
        model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif "embed" in name:
                    p.normal_(0.0, 1.0)
                else:
                    p.normal_(0.0, 0.2)
        gen = torch.Generator().manual_seed(99 + ai)
        prompts = [torch.randint(3, cfg_dict["vocab_size"], (n,), generator=gen).tolist()
                   for n in PROMPT_LENGTHS]
        for dname, (dtype, _) in DTYPES.items():
            name = f"{arch}-{dname}"
            d = os.path.join(out, name)
            m = model.to(dtype)
            m.save_pretrained(d, safe_serialization=True,
                              max_shard_size="200KB" if dname == "bf16" else "10GB")
            ref = transformers.AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                                                    attn_implementation="eager")
            ref.eval()
            for prompt in prompts:
                ids = torch.tensor([prompt])
                with torch.no_grad():
                    g = ref.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False,
                                     output_scores=True, return_dict_in_generate=True,
                                     output_logits=True, min_new_tokens=NEW_TOKENS,
                                     eos_token_id=None, pad_token_id=0)
                new = g.sequences[0, len(prompt):].tolist()
                lps = [float(torch.log_softmax(l[0].float(), -1)[t]) for l, t in zip(g.logits, new)]
                cases.append({"model": name, "prompt_ids": prompt, "output_ids": new, "logprobs": lps})
            model = model.float()
    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump({"reference": f"transformers {transformers.__version__}",
                   "max_tokens": NEW_TOKENS, "cases": cases}, f)
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
