// Attention kernels against the CPU reference: paged decode (split-KV and single-split),
// ragged batches mixing prefill chunks with decodes, chunked prefill (q_len < seq_len),
// sliding windows, long contexts, GQA ratios 1-12, head dims 16-256, block sizes 16/32, and
// the encoder's bidirectional attention, Gemma 3's bidirectional image spans. Each case runs the tiled kernels (the default)
// and the rowwise kernel, so a failure says which implementation is wrong. Outputs are
// compared per (token, head) row, relative to that row's norm: a 4,100-token split-KV row
// cannot hide among short ones (bounds: tiled 3e-2, rowwise 1e-2 per row).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <sstream>

#include "tests/gpu/gpu_test_util.h"

using namespace iris;
using namespace iris::gpu_test;

namespace {

struct Seq {
  int q_len;
  int seq_len;
};

struct Geometry {
  int d, hq, hkv, block_size;
};

std::string describe(const std::vector<Seq>& seqs, const Geometry& g, int window) {
  std::ostringstream os;
  os << "D=" << g.d << " Hq=" << g.hq << " Hkv=" << g.hkv << " block=" << g.block_size
     << " window=" << window << " seqs:";
  for (const Seq& s : seqs) os << " (" << s.q_len << "/" << s.seq_len << ")";
  return os.str();
}

// `spans`: AttentionMetadata::media_span ([T, 2]) or empty.
void run_paged(const std::vector<Seq>& seqs, const Geometry& g, int window, uint32_t seed,
               const std::vector<int32_t>& spans = {}) {
  const std::string what = describe(seqs, g, window);
  INFO(what);
  const AttentionShape shape{g.hq, g.hkv, g.d};
  const int num_seqs = static_cast<int>(seqs.size());
  int tokens = 0, max_q = 0, max_len = 0, max_blocks = 0, total_blocks = 0;
  for (const Seq& s : seqs) {
    tokens += s.q_len;
    max_q = std::max(max_q, s.q_len);
    max_len = std::max(max_len, s.seq_len);
    const int nb = (s.seq_len + g.block_size - 1) / g.block_size;
    max_blocks = std::max(max_blocks, nb);
    total_blocks += nb;
  }
  const int num_blocks = total_blocks + 3;
  // Scattered blocks: a random permutation handed out in sequence order.
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
  std::vector<int32_t> qstart{0}, lens, tables(static_cast<size_t>(num_seqs) * max_blocks, 0);
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    qstart.push_back(qstart.back() + seqs[s].q_len);
    lens.push_back(seqs[s].seq_len);
    const int nb = (seqs[s].seq_len + g.block_size - 1) / g.block_size;
    for (int b = 0; b < nb; ++b) tables[static_cast<size_t>(s) * max_blocks + b] = perm[next++];
  }
  IntPair qs = int_pair(qstart), sl = int_pair(lens), bt = int_pair(tables);
  IntPair slots = int_pair(std::vector<int32_t>(tokens, -1));
  IntPair sp = int_pair(spans.empty() ? std::vector<int32_t>{0, 0} : spans);
  auto meta_for = [&](bool gpu_side) {
    AttentionMetadata m;
    m.query_start = gpu_side ? qs.g.tensor : qs.c.tensor;
    m.seq_lens = gpu_side ? sl.g.tensor : sl.c.tensor;
    m.block_tables = (gpu_side ? bt.g.tensor : bt.c.tensor).view({num_seqs, max_blocks});
    m.slot_mapping = gpu_side ? slots.g.tensor : slots.c.tensor;
    m.num_seqs = num_seqs;
    m.num_tokens = tokens;
    m.max_query_len = max_q;
    m.max_seq_len = max_len;
    m.max_blocks_per_seq = max_blocks;
    if (!spans.empty()) m.media_span = (gpu_side ? sp.g.tensor : sp.c.tensor).view({tokens, 2});
    return m;
  };
  const AttentionMetadata mc = meta_for(false), mg = meta_for(true);
  // Row r of the output is (token r / Hq, head r % Hq); name it by its sequence.
  auto name_row = [&](int64_t r) {
    const int t = static_cast<int>(r / g.hq), h = static_cast<int>(r % g.hq);
    int s = 0;
    while (s + 1 < num_seqs && qstart[s + 1] <= t) ++s;
    const int pos = seqs[s].seq_len - seqs[s].q_len + (t - qstart[s]);
    std::ostringstream os;
    os << "token " << t << " head " << h << ": seq " << s << " (" << seqs[s].q_len << "/"
       << seqs[s].seq_len << ") position " << pos;
    return os.str();
  };

  Pair qkv = random_pair({tokens, shape.qkv_dim()}, seed + 1);
  Pair kc = random_pair({num_blocks, g.block_size, g.hkv, g.d}, seed + 2);
  Pair vc = random_pair({num_blocks, g.block_size, g.hkv, g.d}, seed + 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(g.d));
  Pair out = output_pair({tokens, shape.q_dim()});
  cpu().ops().attention(qkv.cpu(), KvLayer{kc.cpu(), vc.cpu()}, shape, mc, scale, window,
                        out.cpu());
  const auto ref = download(cpu(), out.cpu());
  if (!spans.empty()) {  // the spans must change what the CPU computes, or this tests nothing
    AttentionMetadata causal = mc;
    causal.media_span = Tensor{};
    cpu().ops().attention(qkv.cpu(), KvLayer{kc.cpu(), vc.cpu()}, shape, causal, scale, window,
                          out.cpu());
    REQUIRE(download(cpu(), out.cpu()) != ref);
  }

  gpu().ops().attention(qkv.gpu(), KvLayer{kc.gpu(), vc.gpu()}, shape, mg, scale, window,
                        out.gpu());
  require_rows_close(ref, download(gpu(), out.gpu()), g.d, 3e-2, "tiled attention", name_row);

  poison(out.gpu());
  gpu_rowwise().ops().attention(qkv.gpu(), KvLayer{kc.gpu(), vc.gpu()}, shape, mg, scale, window,
                                out.gpu());
  require_rows_close(ref, download(gpu_rowwise(), out.gpu()), g.d, 1e-2, "rowwise attention",
                     name_row);
}

}  // namespace

TEST_CASE("paged attention over head dims, GQA ratios and block sizes", "[attention]") {
  auto d = GENERATE(64, 128, 256);
  auto heads = GENERATE(std::pair{4, 4}, std::pair{8, 4}, std::pair{16, 4}, std::pair{16, 2});
  auto bs = GENERATE(16, 32);
  const Geometry g{d, heads.first, heads.second, bs};
  uint32_t seed = static_cast<uint32_t>(d * 1000 + heads.first * 10 + heads.second + bs);

  SECTION("decode batch, short and long contexts (split-KV path)") {
    run_paged({{1, 1}, {1, 17}, {1, 300}, {1, 4100}}, g, 0, seed);
  }
  SECTION("ragged batch: full prefill, chunked prefill and decodes together") {
    run_paged({{17, 17}, {5, 300}, {1, 4100}, {300, 300}, {1, 1}, {64, 4100}}, g, 0, seed + 7);
  }
  SECTION("sliding window") {
    run_paged({{100, 100}, {1, 300}, {33, 4100}, {1, 17}, {70, 70}}, g, 64, seed + 13);
  }
}

TEST_CASE("paged decode with many sequences (one split per CTA)", "[attention]") {
  auto d = GENERATE(64, 128);
  std::mt19937 rng(d);
  std::vector<Seq> seqs;
  for (int i = 0; i < 96; ++i) seqs.push_back({1, 1 + static_cast<int>(rng() % 700)});
  run_paged(seqs, Geometry{d, 32, 8, 16}, 0, 91);
  run_paged(seqs, Geometry{d, 32, 8, 32}, 200, 92);
}

TEST_CASE("paged attention: GQA groups above 8, unusual head dims", "[attention]") {
  run_paged({{1, 33}, {1, 1000}}, Geometry{128, 24, 2, 16}, 0, 101);   // group 12 decode
  run_paged({{40, 90}, {1, 1000}}, Geometry{128, 24, 2, 16}, 0, 102);  // group 12 prefill
  for (int d : {16, 32, 96, 200})
    run_paged({{23, 23}, {1, 500}, {9, 130}}, Geometry{d, 8, 2, 16}, 0, 103 + d);
  run_paged({{1, 100}, {1, 7}}, Geometry{32, 8, 2, 16}, 0, 110);  // decode, small D
}

TEST_CASE("paged attention: long prefill and a long chunk", "[attention]") {
  run_paged({{4100, 4100}}, Geometry{128, 16, 4, 16}, 0, 201);
  run_paged({{1000, 4100}, {1, 4100}}, Geometry{128, 32, 8, 32}, 0, 202);
  run_paged({{2048, 2048}}, Geometry{64, 8, 8, 16}, 1000, 203);
}

TEST_CASE("encoder attention (bidirectional, fixed sequence length)", "[attention]") {
  struct Case {
    int d, hq, hkv, seq_len, seqs;
  };
  auto c = GENERATE(Case{64, 16, 16, 577, 2}, Case{72, 16, 16, 729, 1}, Case{80, 16, 16, 100, 3},
                    Case{128, 8, 2, 256, 2}, Case{64, 4, 4, 1, 5});
  INFO("D=" << c.d << " Hq=" << c.hq << " Hkv=" << c.hkv << " seq_len=" << c.seq_len << " x "
            << c.seqs);
  const AttentionShape shape{c.hq, c.hkv, c.d};
  const int t = c.seq_len * c.seqs;
  Pair qkv = random_pair({t, shape.qkv_dim()}, 300 + c.d);
  Pair out = output_pair({t, shape.q_dim()});
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  cpu().ops().encoder_attention(qkv.cpu(), shape, c.seq_len, scale, out.cpu());
  const auto ref = download(cpu(), out.cpu());
  gpu().ops().encoder_attention(qkv.gpu(), shape, c.seq_len, scale, out.gpu());
  auto name_row = [&](int64_t r) {
    const int64_t t = r / c.hq;
    return "token " + std::to_string(t % c.seq_len) + " of sequence " +
           std::to_string(t / c.seq_len) + ", head " + std::to_string(r % c.hq);
  };
  require_rows_close(ref, download(gpu(), out.gpu()), c.d, 3e-2, "tiled encoder attention",
                     name_row);
  poison(out.gpu());
  gpu_rowwise().ops().encoder_attention(qkv.gpu(), shape, c.seq_len, scale, out.gpu());
  require_rows_close(ref, download(gpu_rowwise(), out.gpu()), c.d, 1e-2,
                     "rowwise encoder attention", name_row);
}

TEST_CASE("Gemma 3 image spans: tokens of an image see the whole image", "[attention]") {
  const Geometry g{64, 8, 4, 16};
  // Sequence 0: a 40-token prefill chunk at positions 20..59 with an image at [30, 45);
  // sequence 1: a decode. With and without an 8-token sliding window.
  const std::vector<Seq> seqs{{40, 60}, {1, 33}};
  std::vector<int32_t> spans(2 * 41, 0);
  for (int p = 30; p < 45; ++p) {
    spans[2 * (p - 20)] = 30;
    spans[2 * (p - 20) + 1] = 45;
  }
  run_paged(seqs, g, 0, 71, spans);
  run_paged(seqs, g, 8, 72, spans);
}
