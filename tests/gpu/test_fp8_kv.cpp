// FP8 E4M3 KV cache (--kv-cache-dtype fp8) on the GPU against the CPU backend: the cache
// write (qk_norm_rope_store_kv with zero rotary frequencies, so K and V reach the cache as the
// exact bf16 inputs) must produce the same bytes as the CPU's engine/core/fp8.h conversion,
// saturated values included; then paged attention over that cache — tiled decode (split-KV),
// tiled prefill mixed with decodes, and the rowwise kernel — against the CPU backend's
// attention over the same FP8 cache, with the bf16 paths' bounds (tiled 3e-2, rowwise 1e-2
// relative per (token, head) row).
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cmath>
#include <numeric>
#include <random>

#include "tests/gpu/gpu_test_util.h"

using namespace iris;
using namespace iris::gpu_test;

namespace {

struct Fp8Seq {
  int q_len;
  int seq_len;
};

std::vector<uint8_t> cache_bytes_gpu(const Tensor& t) {
  std::vector<uint8_t> out(static_cast<size_t>(t.numel()));
  gpu().synchronize();
  REQUIRE(cudaMemcpy(out.data(), t.data, out.size(), cudaMemcpyDeviceToHost) == cudaSuccess);
  return out;
}

void run_fp8_case(const std::vector<Fp8Seq>& seqs, int d, int hq, int hkv, int block_size,
                  float k_scale, float v_scale, uint32_t seed) {
  INFO("D=" << d << " Hq=" << hq << " Hkv=" << hkv << " block=" << block_size << " k_scale="
            << k_scale << " v_scale=" << v_scale << " seqs=" << seqs.size());
  const AttentionShape shape{hq, hkv, d};
  const int num_seqs = static_cast<int>(seqs.size());
  int max_blocks = 0, total_blocks = 0, ctx_tokens = 0, q_tokens = 0, max_q = 0, max_len = 0;
  for (const Fp8Seq& s : seqs) {
    const int nb = (s.seq_len + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, nb);
    total_blocks += nb;
    ctx_tokens += s.seq_len;
    q_tokens += s.q_len;
    max_q = std::max(max_q, s.q_len);
    max_len = std::max(max_len, s.seq_len);
  }
  const int num_blocks = total_blocks + 2;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs) * max_blocks, 0), qstart{0}, lens;
  std::vector<int32_t> ctx_slots, ctx_pos;
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int nb = (seqs[s].seq_len + block_size - 1) / block_size;
    for (int b = 0; b < nb; ++b) tables[static_cast<size_t>(s) * max_blocks + b] = perm[next++];
    for (int j = 0; j < seqs[s].seq_len; ++j) {
      ctx_slots.push_back(tables[static_cast<size_t>(s) * max_blocks + j / block_size] * block_size +
                          j % block_size);
      ctx_pos.push_back(j);
    }
    qstart.push_back(qstart.back() + seqs[s].q_len);
    lens.push_back(seqs[s].seq_len);
  }

  // 1. Write every context position's K/V through the cache-write op on both backends.
  const Shape cache_shape{num_blocks, block_size, hkv, d};
  Buffer kc = cpu().allocate(DType::F8_E4M3, cache_shape), vc = cpu().allocate(DType::F8_E4M3, cache_shape);
  Buffer kg = gpu().allocate(DType::F8_E4M3, cache_shape), vg = gpu().allocate(DType::F8_E4M3, cache_shape);
  KvLayer kv_c{kc.tensor, vc.tensor, k_scale, v_scale};
  KvLayer kv_g{kg.tensor, vg.tensor, k_scale, v_scale};
  {
    Pair ctx = random_pair({ctx_tokens, shape.qkv_dim()}, seed + 1);
    IntPair pos = int_pair(ctx_pos), slots = int_pair(ctx_slots);
    Pair inv_freq = f32_pair(std::vector<float>(d / 2, 0.0f), {d / 2});  // identity rotation
    auto meta_for = [&](bool g) {
      AttentionMetadata m;
      m.slot_mapping = g ? slots.g.tensor : slots.c.tensor;
      m.num_tokens = ctx_tokens;
      return m;
    };
    cpu().ops().qk_norm_rope_store_kv(ctx.cpu(), pos.c.tensor, inv_freq.cpu(), Tensor{}, Tensor{},
                                      1e-6f, shape, meta_for(false), kv_c);
    gpu().ops().qk_norm_rope_store_kv(ctx.gpu(), pos.g.tensor, inv_freq.gpu(), Tensor{}, Tensor{},
                                      1e-6f, shape, meta_for(true), kv_g);
    const std::vector<uint8_t> kgb = cache_bytes_gpu(kg.tensor), vgb = cache_bytes_gpu(vg.tensor);
    const uint8_t* kcb = kc.tensor.ptr<uint8_t>();
    const uint8_t* vcb = vc.tensor.ptr<uint8_t>();
    int64_t k_diff = 0, v_diff = 0, saturated = 0;
    for (int32_t slot : ctx_slots)
      for (int64_t i = 0; i < int64_t{hkv} * d; ++i) {
        const int64_t at = slot * int64_t{hkv} * d + i;
        k_diff += kcb[at] != kgb[at];
        v_diff += vcb[at] != vgb[at];
        saturated += (kcb[at] & 0x7F) == 0x7E;
      }
    CHECK(k_diff == 0);
    CHECK(v_diff == 0);
    INFO("saturated K elements: " << saturated);
    if (k_scale < 0.01f) CHECK(saturated > 0);  // the small scale exercises saturation
  }

  // 2. Attention of fresh query rows over that cache (slots -1: nothing is written).
  IntPair qs = int_pair(qstart), sl = int_pair(lens), bt = int_pair(tables);
  IntPair no_slots = int_pair(std::vector<int32_t>(q_tokens, -1));
  auto meta_for = [&](bool g) {
    AttentionMetadata m;
    m.query_start = g ? qs.g.tensor : qs.c.tensor;
    m.seq_lens = g ? sl.g.tensor : sl.c.tensor;
    m.block_tables = (g ? bt.g.tensor : bt.c.tensor).view({num_seqs, max_blocks});
    m.slot_mapping = g ? no_slots.g.tensor : no_slots.c.tensor;
    m.num_seqs = num_seqs;
    m.num_tokens = q_tokens;
    m.max_query_len = max_q;
    m.max_seq_len = max_len;
    m.max_blocks_per_seq = max_blocks;
    return m;
  };
  Pair qkv = random_pair({q_tokens, shape.qkv_dim()}, seed + 2);
  Pair out = output_pair({q_tokens, shape.q_dim()});
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  cpu().ops().attention(qkv.cpu(), kv_c, shape, meta_for(false), scale, 0, out.cpu());
  const auto ref = download(cpu(), out.cpu());
  gpu().ops().attention(qkv.gpu(), kv_g, shape, meta_for(true), scale, 0, out.gpu());
  require_rows_close(ref, download(gpu(), out.gpu()), d, 3e-2, "tiled attention, FP8 KV");
  poison(out.gpu());
  gpu_rowwise().ops().attention(qkv.gpu(), kv_g, shape, meta_for(true), scale, 0, out.gpu());
  require_rows_close(ref, download(gpu_rowwise(), out.gpu()), d, 1e-2, "rowwise attention, FP8 KV");
}

}  // namespace

TEST_CASE("FP8 KV cache: GPU cache bytes and attention match the CPU backend", "[attention]") {
  // Decode (one query row per sequence; the 1,500-token context takes the split-KV path).
  run_fp8_case({{1, 1500}, {1, 37}, {1, 3}}, 128, 8, 2, 16, 1.0f, 1.0f, 11);
  // Checkpoint-style scales, one small enough to saturate part of K.
  run_fp8_case({{1, 700}, {1, 64}}, 64, 12, 4, 32, 0.004f, 0.02f, 12);
  // Prefill chunks mixed with a decode (the tensor-core kernel stages the FP8 tiles as bf16).
  run_fp8_case({{40, 40}, {1, 90}, {17, 200}}, 128, 8, 2, 16, 0.05f, 0.03f, 13);
  run_fp8_case({{64, 300}}, 64, 4, 4, 16, 1.0f, 0.5f, 14);
}
