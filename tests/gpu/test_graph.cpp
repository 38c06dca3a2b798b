// CUDA graphs (cuda/graph.h): a decode-shaped sequence of ops (norm, GEMM, rope + KV
// store, split-KV decode attention, GEMM) captured once must give bitwise the eager
// result, also after new inputs are uploaded into the same buffers, which is how the
// runner will use it. Also checks that the ops are capturable at all (no hidden syncs or
// allocations).
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>

#include "cuda/graph.h"
#include "tests/gpu/gpu_test_util.h"

using namespace iris;
using namespace iris::gpu_test;

TEST_CASE("a captured decode step replays bitwise like eager execution", "[ops]") {
  Backend& b = gpu();
  const int seqs = 4, hidden = 512, d = 64, block_size = 16, blocks_per_seq = 64;
  const AttentionShape shape{8, 2, d};
  auto dev = [&](Shape s, DType t = DType::BF16) { return b.allocate(t, s); };
  auto fill = [&](Buffer& buf, uint32_t seed, float scale) {
    const auto v = random_bf16_values(buf.tensor.numel(), seed, scale);
    b.upload(v.data(), DType::F32, buf.tensor);
  };
  Buffer x = dev({seqs, hidden}), normed = dev({seqs, hidden}), norm_w = dev({hidden});
  Buffer wqkv = dev({shape.qkv_dim(), hidden}), qkv = dev({seqs, shape.qkv_dim()});
  Buffer attn = dev({seqs, shape.q_dim()}), wo = dev({hidden, shape.q_dim()});
  Buffer y = dev({seqs, hidden}, DType::F32);
  Buffer kc = dev({seqs * blocks_per_seq, block_size, shape.num_kv_heads, d});
  Buffer vc = dev({seqs * blocks_per_seq, block_size, shape.num_kv_heads, d});
  fill(x, 1, 1.0f);
  fill(norm_w, 2, 1.0f);
  fill(wqkv, 3, 0.05f);
  fill(wo, 4, 0.05f);
  fill(kc, 5, 1.0f);
  fill(vc, 6, 1.0f);
  std::vector<float> inv(d / 2);
  for (int i = 0; i < d / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / d);
  Buffer freq = dev({d / 2}, DType::F32);
  b.upload(inv.data(), DType::F32, freq.tensor);

  // Sequences at contexts 1000, 37, 513, 1 after this step; blocks s*64 .. s*64+63.
  const std::vector<int32_t> lens = {1000, 37, 513, 1};
  std::vector<int32_t> qstart(seqs + 1), pos(seqs), slots(seqs), tables(seqs * blocks_per_seq);
  std::iota(qstart.begin(), qstart.end(), 0);
  std::iota(tables.begin(), tables.end(), 0);
  for (int s = 0; s < seqs; ++s) {
    pos[s] = lens[s] - 1;
    slots[s] = tables[s * blocks_per_seq + pos[s] / block_size] * block_size + pos[s] % block_size;
  }
  auto i32 = [&](const std::vector<int32_t>& v) {
    Buffer buf = dev({static_cast<int64_t>(v.size())}, DType::I32);
    b.upload_i32(v.data(), buf.tensor);
    return buf;
  };
  Buffer qs = i32(qstart), ln = i32(lens), ps = i32(pos), sl = i32(slots), bt = i32(tables);
  AttentionMetadata meta;
  meta.query_start = qs.tensor;
  meta.seq_lens = ln.tensor;
  meta.block_tables = bt.tensor.view({seqs, blocks_per_seq});
  meta.slot_mapping = sl.tensor;
  meta.num_seqs = meta.num_tokens = seqs;
  meta.max_query_len = 1;
  meta.max_seq_len = blocks_per_seq * block_size;  // the capacity, as graph.h asks
  meta.max_blocks_per_seq = blocks_per_seq;
  KvLayer kv{kc.tensor, vc.tensor};

  Ops& ops = b.ops();
  auto step = [&] {
    ops.rms_norm(x.tensor, norm_w.tensor, 1e-5f, normed.tensor);
    ops.linear(normed.tensor, wqkv.tensor, Tensor{}, qkv.tensor);
    ops.qk_norm_rope_store_kv(qkv.tensor, ps.tensor, freq.tensor, Tensor{}, Tensor{}, 1e-6f, shape,
                              meta, kv);
    ops.attention(qkv.tensor, kv, shape, meta, 0.125f, 0, attn.tensor);
    ops.linear(attn.tensor, wo.tensor, Tensor{}, y.tensor);
  };

  step();  // warm-up: GEMM plans cached, kernels loaded
  const auto eager1 = download(b, y.tensor);
  cuda::StepGraphs graphs(b, {8, 4, 4, 16});
  REQUIRE(graphs.bucket_for(3) == 4);
  REQUIRE(graphs.bucket_for(5) == 8);
  REQUIRE(graphs.bucket_for(17) == 0);
  graphs.capture(4, step);
  REQUIRE(graphs.captured(4));
  REQUIRE_FALSE(graphs.captured(8));

  auto poison_y = [&] { poison(y.tensor); };
  poison_y();
  graphs.replay(4);
  REQUIRE(download(b, y.tensor) == eager1);

  // New inputs in the same buffers: the replay sees them.
  fill(x, 11, 1.0f);
  poison_y();
  graphs.replay(4);
  const auto replay2 = download(b, y.tensor);
  REQUIRE(replay2 != eager1);
  poison_y();
  step();
  REQUIRE(download(b, y.tensor) == replay2);
}
