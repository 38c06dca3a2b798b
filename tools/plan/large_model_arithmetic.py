#!/usr/bin/env python3
"""Weight, KV-cache and decode-bandwidth arithmetic for large checkpoints on H100/H200 nodes.

Prints the table of docs/scaling.md ("The arithmetic for today's large checkpoints"). The
shapes are the published config.json values of each model; nothing is downloaded.
"""

GPUS = {"H100": (80e9, 3.35e12), "H200": (141e9, 4.8e12)}  # HBM bytes, bytes/s
UTILIZATION = 0.9     # --gpu-memory-utilization
RESERVED = 3e9        # activations, workspaces, CUDA graphs per GPU
MIN_KV_ROOM = 8e9     # a configuration "fits" when at least this much is left for KV

# Llama-style GQA models: layers, hidden, query heads, KV heads, head dim, dense MLP width,
# vocabulary, experts, experts per token, expert MLP width.
MODELS = {
    "Llama-3.1-70B": dict(L=80, H=8192, nq=64, nkv=8, hd=128, I=28672, V=128256, E=0, k=0, Im=0),
    "Mixtral-8x22B": dict(L=56, H=6144, nq=48, nkv=8, hd=128, I=0, V=32768, E=8, k=2, Im=16384),
    "Qwen3-235B-A22B": dict(L=94, H=4096, nq=64, nkv=4, hd=128, I=0, V=151936, E=128, k=8, Im=1536),
}


def gqa_params(m):
    """(total, active, embedding + LM head) parameter counts."""
    attn = 2 * m["H"] * m["nq"] * m["hd"] + 2 * m["H"] * m["nkv"] * m["hd"]
    if m["E"]:
        mlp_total = m["E"] * 3 * m["H"] * m["Im"] + m["H"] * m["E"]  # experts + router
        mlp_active = m["k"] * 3 * m["H"] * m["Im"] + m["H"] * m["E"]
    else:
        mlp_total = mlp_active = 3 * m["H"] * m["I"]
    emb = 2 * m["V"] * m["H"]  # untied embedding and LM head
    return (m["L"] * (attn + mlp_total) + emb, m["L"] * (attn + mlp_active) + emb, emb)


def deepseek_v3_params():
    L, H, V, nq = 61, 7168, 129280, 128
    q_lora, kv_lora, rope, nope, vd = 1536, 512, 64, 128, 128
    E, k, Im, I, dense_layers = 256, 8, 2048, 18432, 3
    attn = (H * q_lora + q_lora + q_lora * nq * (nope + rope) + H * (kv_lora + rope) + kv_lora +
            kv_lora * nq * (nope + vd) + nq * vd * H)
    moe_total = E * 3 * H * Im + 3 * H * Im + H * E  # routed + shared expert + router
    moe_active = k * 3 * H * Im + 3 * H * Im + H * E
    emb = 2 * V * H
    total = L * attn + dense_layers * 3 * H * I + (L - dense_layers) * moe_total + emb
    active = L * attn + dense_layers * 3 * H * I + (L - dense_layers) * moe_active + emb
    return total, active, emb, L * (kv_lora + rope)


def main():
    print("| model | weights | GPUs (smallest TP that fits) | weights per GPU | KV room per GPU |"
          " KV per token per GPU, BF16 / FP8 | tokens of KV, BF16 / FP8 KV | batch-1 decode floor |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in MODELS.items():
        total, active, emb = gqa_params(m)
        for wname, wbytes in (("BF16", 2), ("FP8", 1)):
            w = (total - emb) * wbytes + emb * 2  # embeddings stay BF16
            a = (active - emb) * wbytes + emb * 2
            for gpu, (mem, bw) in GPUS.items():
                for tp in (1, 2, 4, 8):
                    per = w / tp
                    room = UTILIZATION * mem - per - RESERVED
                    if room < MIN_KV_ROOM:
                        continue
                    heads = max(1, m["nkv"] // tp)
                    kv16 = 2 * m["L"] * heads * m["hd"] * 2
                    kv8 = kv16 // 2
                    print(f"| {name} | {wname} ({w / 1e9:.0f} GB) | {gpu} × {tp} | {per / 1e9:.1f} GB |"
                          f" {room / 1e9:.0f} GB | {kv16 / 1024:.0f} / {kv8 / 1024:.0f} KiB |"
                          f" {room / kv16 / 1e3:.0f}k / {room / kv8 / 1e3:.0f}k | {a / tp / bw * 1e3:.1f} ms |")
                    break
    total, active, emb, latent = deepseek_v3_params()
    print(f"\nDeepSeek-V3: {total / 1e9:.1f}B parameters, {active / 1e9:.1f}B active; latent KV "
          f"{latent} elements per token = {latent * 2 / 1024:.1f} KiB BF16")
    w = (total - emb) + emb * 2
    for gpu, (mem, _) in GPUS.items():
        per = w / 8
        room = UTILIZATION * mem - per - RESERVED
        print(f"  FP8 {w / 1e9:.0f} GB, {gpu} × 8: {per / 1e9:.1f} GB per GPU, KV room {room / 1e9:.0f} GB"
              + (f" = {room / (latent * 2) / 1e3:.0f}k tokens" if room > 0 else " (does not fit)"))


if __name__ == "__main__":
    main()
