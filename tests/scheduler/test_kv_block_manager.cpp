// Unit tests of the KV block pool on its own: all-or-nothing allocation, refcounts, the
// free list's eviction order, prefix-cache hits and evictions, hash keys (tokens, media
// content, salt) and the invariant checker itself.
#include <catch2/catch.hpp>
#include <vector>

#include "scheduler/kv_block_manager.h"

using namespace iris::sched;

namespace {

SchedulerConfig small_config(int num_blocks, int block_size = 4) {
  SchedulerConfig c;
  c.block_size = block_size;
  c.num_blocks = num_blocks;
  return c;
}

Request make_request(const std::string& id, std::vector<int32_t> tokens,
                     std::vector<MediaSpan> media = {}, uint64_t salt = 0) {
  Request r;
  r.id = id;
  r.tokens = std::move(tokens);
  r.num_prompt_tokens = static_cast<int>(r.tokens.size());
  r.media = std::move(media);
  r.cache_salt = salt;
  return r;
}

std::vector<int32_t> iota_tokens(int n, int32_t start = 100) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = start + i;
  return t;
}

// Admits r the way the scheduler does: cache lookup, allocate the rest, mark computed.
bool admit(KVBlockManager& kv, Request& r, int num_new = -1) {
  ComputedBlocks c = kv.get_computed_blocks(r);
  if (num_new < 0) num_new = r.num_tokens() - c.num_tokens;
  if (!kv.allocate_slots(r, num_new, &c)) return false;
  r.num_computed_tokens = c.num_tokens + num_new;
  return true;
}

std::string check(const KVBlockManager& kv, std::vector<const Request*> live) {
  return kv.check_invariants(live);
}

}  // namespace

TEST_CASE("block 0 is reserved and the pool starts all free", "[kv]") {
  KVBlockManager kv(small_config(9));
  CHECK(kv.num_total_blocks() == 8);
  CHECK(kv.num_free_blocks() == 8);
  Request r = make_request("a", iota_tokens(32));
  REQUIRE(admit(kv, r));
  CHECK(r.block_table.size() == 8);
  for (int32_t b : r.block_table) CHECK(b != 0);
  CHECK(kv.num_free_blocks() == 0);
  CHECK(check(kv, {&r}).empty());
}

TEST_CASE("allocation is all or nothing", "[kv]") {
  KVBlockManager kv(small_config(5));  // 4 usable blocks of 4 tokens
  Request a = make_request("a", iota_tokens(12));
  REQUIRE(admit(kv, a));
  Request b = make_request("b", iota_tokens(8, 500));
  ComputedBlocks none;
  CHECK_FALSE(kv.allocate_slots(b, 8, &none));
  CHECK(b.block_table.empty());
  CHECK(kv.num_free_blocks() == 1);
  CHECK(kv.stats().query_tokens == 12);  // the failed attempt counted nothing
  CHECK(check(kv, {&a}).empty());
  CHECK(kv.allocate_slots(b, 4, &none));
  CHECK(kv.num_free_blocks() == 0);
  CHECK(check(kv, {&a, &b}).empty());
}

TEST_CASE("a partly filled block is filled before a new one is taken", "[kv]") {
  KVBlockManager kv(small_config(9));
  Request r = make_request("a", iota_tokens(6));
  REQUIRE(admit(kv, r));
  CHECK(r.block_table.size() == 2);
  r.tokens.push_back(7);
  r.tokens.push_back(8);
  REQUIRE(kv.allocate_slots(r, 1));
  CHECK(r.block_table.size() == 2);
  r.num_computed_tokens = 7;
  REQUIRE(kv.allocate_slots(r, 1));
  CHECK(r.block_table.size() == 2);
  r.num_computed_tokens = 8;
  r.tokens.push_back(9);
  REQUIRE(kv.allocate_slots(r, 1));
  CHECK(r.block_table.size() == 3);
}

TEST_CASE("a later request hits the cached prefix, never the whole prompt", "[kv]") {
  KVBlockManager kv(small_config(20));
  Request a = make_request("a", iota_tokens(16));
  REQUIRE(admit(kv, a));
  Request b = make_request("b", iota_tokens(16));
  ComputedBlocks c = kv.get_computed_blocks(b);
  // 16 tokens = 4 full blocks, but the last token must be computed: 3 blocks hit.
  CHECK(c.num_tokens == 12);
  REQUIRE(c.blocks.size() == 3);
  for (int i = 0; i < 3; ++i)
    CHECK(c.blocks[static_cast<size_t>(i)] == a.block_table[static_cast<size_t>(i)]);
  REQUIRE(kv.allocate_slots(b, 4, &c));
  b.num_computed_tokens = 16;
  CHECK(b.block_table[3] != a.block_table[3]);
  CHECK(kv.stats().hit_tokens == 12);
  CHECK(kv.stats().query_tokens == 32);
  CHECK(check(kv, {&a, &b}).empty());

  Request longer = make_request("c", iota_tokens(23));
  CHECK(kv.get_computed_blocks(longer).num_tokens == 16);
  Request diverging = make_request("d", iota_tokens(16));
  diverging.tokens[9] = 7;
  CHECK(kv.get_computed_blocks(diverging).num_tokens == 8);
}

TEST_CASE("freed cached blocks stay hittable until reused; uncached ones go first", "[kv]") {
  KVBlockManager kv(small_config(7));              // 6 usable
  Request a = make_request("a", iota_tokens(10));  // 2 full (cached) + 1 partial block
  REQUIRE(admit(kv, a));
  const std::vector<int32_t> a_blocks = a.block_table;
  kv.free(a);
  CHECK(kv.num_free_blocks() == 6);
  CHECK(kv.stats().num_cached_blocks == 2);
  CHECK(check(kv, {}).empty());

  // Allocating 4 blocks takes the 3 never-used blocks and a's uncached partial block first.
  Request x = make_request("x", iota_tokens(16, 9000));
  REQUIRE(admit(kv, x));
  for (int32_t b : x.block_table) {
    CHECK(b != a_blocks[0]);
    CHECK(b != a_blocks[1]);
  }
  Request a2 = make_request("a2", iota_tokens(10));
  ComputedBlocks c = kv.get_computed_blocks(a2);
  CHECK(c.num_tokens == 8);
  CHECK(check(kv, {&x}).empty());

  // The next allocation evicts a's blocks in LRU order: a frees last-to-first, so block 1
  // (the tail of the prefix) goes before block 0.
  Request y = make_request("y", iota_tokens(4, 7000));
  REQUIRE(admit(kv, y));
  CHECK(y.block_table[0] == a_blocks[1]);
  CHECK(kv.get_computed_blocks(a2).num_tokens == 4);
  CHECK(kv.stats().num_cached_blocks == 6);  // a's block 0, x's 4 full blocks, y's block
  CHECK(check(kv, {&x, &y}).empty());
}

TEST_CASE("a hit on a free cached block takes it off the free list", "[kv]") {
  KVBlockManager kv(small_config(5));  // 4 usable
  Request a = make_request("a", iota_tokens(9));
  REQUIRE(admit(kv, a));
  kv.free(a);
  Request b = make_request("b", iota_tokens(9));
  ComputedBlocks c = kv.get_computed_blocks(b);
  REQUIRE(c.num_tokens == 8);
  // 2 hits from the free list + 1 new block = 3 of 4 free blocks.
  CHECK(kv.can_allocate(b, 1, &c));
  CHECK_FALSE(kv.can_allocate(b, 9, &c));  // 2 hits + 3 new > 4
  REQUIRE(kv.allocate_slots(b, 1, &c));
  CHECK(kv.num_free_blocks() == 1);
  CHECK(check(kv, {&b}).empty());
}

TEST_CASE("the same block content after a different prefix is a different block", "[kv]") {
  KVBlockManager kv(small_config(20));
  const auto w = iota_tokens(4, 90);
  const auto x = iota_tokens(4, 10);
  const auto y = iota_tokens(4, 50);
  auto cat = [](std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> out;
    for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    out.push_back(1);  // one more token so every listed block may hit
    return out;
  };
  Request a = make_request("a", cat({w, y, x}));
  REQUIRE(admit(kv, a));
  Request b = make_request("b", cat({w, x}));  // [x] after [w] instead of after [w][y]
  CHECK(kv.get_computed_blocks(b).num_tokens == 4);
  Request c = make_request("c", cat({x}));  // [x] first
  CHECK(kv.get_computed_blocks(c).num_tokens == 0);
  Request d = make_request("d", cat({w, y, x}));
  CHECK(kv.get_computed_blocks(d).num_tokens == 12);
}

TEST_CASE("media content and cache salt are part of the block hash", "[kv]") {
  KVBlockManager kv(small_config(64));
  const auto tokens = iota_tokens(24);
  Request a = make_request("a", tokens, {MediaSpan{9, 6, 111}});
  REQUIRE(admit(kv, a));

  // Same tokens, different image: blocks before the span (tokens 0-7) are shared, the block
  // holding the span start (8-11) and everything after differ.
  Request b = make_request("b", tokens, {MediaSpan{9, 6, 222}});
  CHECK(kv.get_computed_blocks(b).num_tokens == 8);
  // Same image: everything but the last block.
  Request c = make_request("c", tokens, {MediaSpan{9, 6, 111}});
  CHECK(kv.get_computed_blocks(c).num_tokens == 20);
  // Same image placed one token later: differs from the block of the earlier start.
  Request d = make_request("d", tokens, {MediaSpan{10, 6, 111}});
  CHECK(kv.get_computed_blocks(d).num_tokens == 8);
  // No image at all.
  Request e = make_request("e", tokens);
  CHECK(kv.get_computed_blocks(e).num_tokens == 8);
  // A different salt shares nothing.
  Request f = make_request("f", tokens, {MediaSpan{9, 6, 111}}, /*salt=*/42);
  CHECK(kv.get_computed_blocks(f).num_tokens == 0);
}

TEST_CASE("prefix caching can be switched off", "[kv]") {
  SchedulerConfig cfg = small_config(20);
  cfg.enable_prefix_caching = false;
  KVBlockManager kv(cfg);
  Request a = make_request("a", iota_tokens(16));
  REQUIRE(admit(kv, a));
  Request b = make_request("b", iota_tokens(16));
  CHECK(kv.get_computed_blocks(b).num_tokens == 0);
  CHECK(kv.stats().num_cached_blocks == 0);
  kv.free(a);
  CHECK(kv.num_free_blocks() == kv.num_total_blocks());
  CHECK(check(kv, {}).empty());
}

TEST_CASE("free() uncaches blocks registered for a chunk that never ran", "[kv]") {
  KVBlockManager kv(small_config(20));
  Request a = make_request("a", iota_tokens(16));
  ComputedBlocks none;
  REQUIRE(kv.allocate_slots(a, 16, &none));  // registers 4 full blocks
  CHECK(kv.stats().num_cached_blocks == 4);
  // num_computed_tokens is still 0: the step that would write them never ran.
  kv.free(a);
  CHECK(kv.stats().num_cached_blocks == 0);
  Request b = make_request("b", iota_tokens(16));
  CHECK(kv.get_computed_blocks(b).num_tokens == 0);
  CHECK(check(kv, {}).empty());
}

TEST_CASE("the invariant checker catches a table the pool does not know", "[kv]") {
  KVBlockManager kv(small_config(10));
  Request a = make_request("a", iota_tokens(8));
  REQUIRE(admit(kv, a));
  CHECK(check(kv, {&a}).empty());
  CHECK_FALSE(check(kv, {}).empty());        // refcounts without owners
  CHECK_FALSE(check(kv, {&a, &a}).empty());  // the same request twice
  Request bogus = a;
  bogus.block_table.push_back(a.block_table[0]);
  CHECK_FALSE(check(kv, {&bogus}).empty());  // a block twice in one table
  kv.reset_prefix_cache();
  CHECK(kv.stats().num_cached_blocks == 0);
  CHECK(check(kv, {&a}).empty());
}

TEST_CASE("a bad configuration is rejected with its values", "[kv]") {
  SchedulerConfig cfg;
  cfg.num_blocks = 1;  // only the null block
  CHECK_THROWS_WITH(KVBlockManager(cfg), Catch::Contains("num_blocks=1"));
  cfg.num_blocks = 10;
  cfg.block_size = 0;
  CHECK_THROWS_AS(KVBlockManager(cfg), SchedulerError);
}
