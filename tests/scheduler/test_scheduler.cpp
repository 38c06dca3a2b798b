// Scheduler tests against the fake model runner: batch invariance of every request's
// output under random load (with and without heavy preemption, FCFS and priority, prefix
// caching on and off), no leaked blocks, prefix reuse (including n > 1 siblings and media
// content), admission rejection, aborts in every state, chunked prefill, ordering and
// limits.
#include <algorithm>
#include <catch2/catch.hpp>
#include <random>

#include "scheduler/scheduler.h"
#include "tests/scheduler/driver.h"
#include "tests/scheduler/fake_runner.h"

using namespace iris::sched;
using namespace iris::sched::testing;

namespace {

SchedulerConfig base_config() {
  SchedulerConfig c;
  c.block_size = 16;
  c.num_blocks = 1 + 600;
  c.max_num_seqs = 32;
  c.max_num_batched_tokens = 256;
  return c;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n) {
  std::uniform_int_distribution<int32_t> tok(0, kVocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = tok(rng);
  return t;
}

RequestSpec spec(std::string id, std::vector<int32_t> prompt, int max_tokens,
                 std::vector<MediaSpan> media = {}, int priority = 0, uint64_t arrival = 0) {
  RequestSpec s;
  s.id = std::move(id);
  s.prompt = std::move(prompt);
  s.max_tokens = max_tokens;
  s.media = std::move(media);
  s.priority = priority;
  s.arrival_seq = arrival;
  return s;
}

const ScheduledSeq* find_seq(const SchedulerOutput& out, const std::string& id) {
  for (const auto& s : out.scheduled) {
    if (s.id == id) return &s;
  }
  return nullptr;
}

struct WorkloadItem {
  RequestSpec spec;
  int arrival_step = 0;
  int abort_after = -1;  // steps after arrival; -1 = never
};

// 100+ random requests: prompt lengths 1-300, some sharing long prefixes, some n > 1
// siblings with identical prompts arriving together, some with images, staggered
// arrivals, ~10% aborted part-way.
// With many_images, a third of the prompts hold one to three images drawn from five, each
// image's length fixed by its content (8-24 tokens), as a vision tower makes them.
std::vector<WorkloadItem> random_workload(uint64_t seed, int n, bool priorities,
                                          bool many_images = false) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int32_t>> bases;
  for (int i = 0; i < 4; ++i) bases.push_back(random_tokens(rng, 150 + 30 * i));
  // 16-token pieces that recur at different places in different prompts: the same block
  // content after different prefixes must never share KV.
  std::vector<std::vector<int32_t>> pieces;
  for (int i = 0; i < 3; ++i) pieces.push_back(random_tokens(rng, 16));
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  std::vector<WorkloadItem> items;
  int i = 0;
  while (static_cast<int>(items.size()) < n) {
    std::vector<int32_t> prompt;
    const int kind = uni(0, 9);
    if (kind < 4) {  // shares a long prefix
      const auto& base = bases[static_cast<size_t>(uni(0, 3))];
      prompt.assign(base.begin(), base.begin() + uni(40, static_cast<int>(base.size())));
      auto tail = random_tokens(rng, uni(0, 300 - static_cast<int>(prompt.size())));
      prompt.insert(prompt.end(), tail.begin(), tail.end());
      if (prompt.empty()) prompt.push_back(1);
    } else if (kind < 6) {  // recurring pieces
      const int n_pieces = uni(1, 18);
      for (int k = 0; k < n_pieces; ++k) {
        const auto& piece = pieces[static_cast<size_t>(uni(0, 2))];
        prompt.insert(prompt.end(), piece.begin(), piece.end());
      }
      prompt.resize(static_cast<size_t>(uni(1, static_cast<int>(prompt.size()))));
    } else {
      prompt = random_tokens(rng, uni(1, 300));
    }
    std::vector<MediaSpan> media;
    if (many_images) {
      if (uni(0, 2) == 0 && prompt.size() > 30) {
        int pos = uni(0, 5);
        for (int k = uni(1, 3); k > 0; --k) {
          const int image = uni(0, 4);
          const int len = 8 + 4 * image;
          if (pos + len > static_cast<int>(prompt.size())) break;
          media.push_back(MediaSpan{pos, len, 100u + static_cast<uint64_t>(image)});
          pos += len + uni(0, 40);
        }
      }
    } else if (uni(0, 6) == 0 && prompt.size() > 20) {
      const int start = uni(0, static_cast<int>(prompt.size()) - 10);
      media.push_back(MediaSpan{start, uni(1, 10), static_cast<uint64_t>(uni(1, 3))});
    }
    const int siblings = uni(0, 9) == 0 ? uni(2, 4) : 1;  // n > 1
    const int arrival = uni(0, 80);
    const int max_tokens = uni(1, 48);
    const int priority = priorities ? uni(0, 3) : 0;
    for (int k = 0; k < siblings; ++k) {
      WorkloadItem w;
      std::string id = "r";
      id += std::to_string(i++);
      w.spec = spec(std::move(id), prompt, max_tokens, media, priority,
                    static_cast<uint64_t>(items.size()));
      w.arrival_step = arrival;
      w.abort_after = uni(0, 9) == 0 ? uni(0, 25) : -1;
      items.push_back(std::move(w));
    }
  }
  return items;
}

struct WorkloadResult {
  SchedulerStats stats;
  int steps = 0;
};

WorkloadResult run_workload(const SchedulerConfig& cfg, uint64_t seed, int n, bool priorities,
                            bool many_images = false) {
  Driver d(cfg);
  auto items = random_workload(seed, n, priorities, many_images);
  std::sort(items.begin(), items.end(), [](const WorkloadItem& a, const WorkloadItem& b) {
    return a.arrival_step < b.arrival_step;
  });
  std::multimap<int, std::string> aborts;  // step -> id
  size_t next = 0;
  int step = 0;
  while (next < items.size() || d.sched.has_unfinished_requests()) {
    while (next < items.size() && items[next].arrival_step <= step) {
      WorkloadItem& w = items[next++];
      if (w.abort_after >= 0) aborts.emplace(step + w.abort_after, w.spec.id);
      AdmitResult r = d.add(std::move(w.spec));
      REQUIRE(r.ok());
    }
    for (auto it = aborts.begin(); it != aborts.end() && it->first <= step;) {
      d.abort(it->second);
      it = aborts.erase(it);
    }
    REQUIRE_NOTHROW(d.step());
    ++step;
    REQUIRE(step < 50000);
  }
  INFO(d.compare_with_reference());
  CHECK(d.compare_with_reference().empty());
  const SchedulerStats s = d.sched.stats();
  size_t out_tokens = 0, aborted = 0;
  for (const auto& [id, t] : d.tracks) {
    out_tokens += t.output.size();
    aborted += t.aborted;
  }
  UNSCOPED_INFO("requests " << d.tracks.size() << ", steps " << step << ", output tokens "
                            << out_tokens << ", aborted " << aborted << ", preemptions "
                            << s.num_preemptions << ", prefix hit rate "
                            << s.prefix_cache_hit_rate);
  CHECK(s.num_running == 0);
  CHECK(s.num_waiting == 0);
  CHECK(s.num_free_blocks == s.num_total_blocks);
  CHECK(d.sched.check_invariants().empty());
  if (cfg.budgets_encoder()) CHECK(s.encoder_cache.encoded_items == d.encoded_items);
  return {s, step};
}

}  // namespace

// --- (a) + (b): batch invariance and no leaks under random load ----------------------------

TEST_CASE("random load: every request produces its solo output", "[scheduler][invariance]") {
  const auto r = run_workload(base_config(), 1, 120, false);
  CHECK(r.stats.num_cached_tokens_hit > 0);  // shared prefixes and siblings hit the cache
}

TEST_CASE("random load with a tiny KV cache: heavy preemption, same outputs",
          "[scheduler][invariance][preemption]") {
  SchedulerConfig cfg = base_config();
  cfg.num_blocks = 1 + 26;  // the longest request alone needs 22 blocks
  for (uint64_t seed : {2, 3}) {
    const auto r = run_workload(cfg, seed, 110, false);
    INFO("preemptions " << r.stats.num_preemptions);
    CHECK(r.stats.num_preemptions > 10);
  }
}

TEST_CASE("random load, priority policy, tight cache", "[scheduler][invariance][priority]") {
  SchedulerConfig cfg = base_config();
  cfg.num_blocks = 1 + 40;
  cfg.policy = SchedulingPolicy::kPriority;
  const auto r = run_workload(cfg, 4, 110, true);
  CHECK(r.stats.num_preemptions > 0);
}

TEST_CASE("random load without prefix caching", "[scheduler][invariance]") {
  SchedulerConfig cfg = base_config();
  cfg.num_blocks = 1 + 30;
  cfg.enable_prefix_caching = false;
  const auto r = run_workload(cfg, 5, 100, false);
  CHECK(r.stats.num_cached_tokens_hit == 0);
  CHECK(r.stats.num_preemptions > 0);
}

TEST_CASE("random load with odd block size, no null block, small budget",
          "[scheduler][invariance]") {
  SchedulerConfig cfg;
  cfg.block_size = 7;
  cfg.num_blocks = 60;
  cfg.reserve_null_block = false;
  cfg.max_num_seqs = 8;
  cfg.max_num_batched_tokens = 40;
  const auto r = run_workload(cfg, 6, 100, false);
  CHECK(r.stats.num_preemptions > 0);
}

// --- (c) prefix reuse --------------------------------------------------------------------

TEST_CASE("a request sharing a 256-token prefix computes only its new tokens",
          "[scheduler][prefix]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_batched_tokens = 2048;
  Driver d(cfg);
  std::mt19937_64 rng(7);
  const auto prefix = random_tokens(rng, 256);
  auto pa = prefix;
  auto tail_a = random_tokens(rng, 10);
  pa.insert(pa.end(), tail_a.begin(), tail_a.end());
  REQUIRE(d.add(spec("a", pa, 8)).ok());
  d.run_to_completion();
  CHECK(d.tracks.at("a").first_num_computed == 0);

  auto pb = prefix;
  auto tail_b = random_tokens(rng, 12);
  pb.insert(pb.end(), tail_b.begin(), tail_b.end());
  REQUIRE(d.add(spec("b", pb, 8)).ok());
  const SchedulerOutput out = d.step();
  const ScheduledSeq* b = find_seq(out, "b");
  REQUIRE(b != nullptr);
  CHECK(b->num_computed_tokens == 256);
  CHECK(b->num_new_tokens == 12);
  CHECK(d.sched.stats().num_cached_tokens_hit == 256);
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  CHECK(d.sched.stats().prefix_cache_hit_rate > 0.4);
}

TEST_CASE("n > 1 siblings added in the same step share the prompt's full blocks",
          "[scheduler][prefix]") {
  Driver d(base_config());
  std::mt19937_64 rng(8);
  const auto prompt = random_tokens(rng, 100);
  for (const char* id : {"s0", "s1", "s2"}) REQUIRE(d.add(spec(id, prompt, 12)).ok());
  const SchedulerOutput out = d.step();
  REQUIRE(out.scheduled.size() == 3);
  CHECK(out.scheduled[0].num_computed_tokens == 0);
  CHECK(out.scheduled[0].num_new_tokens == 100);
  for (int i = 1; i < 3; ++i) {
    CHECK(out.scheduled[i].num_computed_tokens == 96);  // 6 full blocks of 16
    CHECK(out.scheduled[i].num_new_tokens == 4);
    for (int b = 0; b < 6; ++b)
      CHECK(out.scheduled[i].block_table[b] == out.scheduled[0].block_table[b]);
    CHECK(out.scheduled[i].block_table[6] != out.scheduled[0].block_table[6]);
  }
  CHECK(out.total_num_scheduled_tokens == 108);
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  CHECK(d.tracks.at("s0").output == d.tracks.at("s1").output);
}

TEST_CASE("siblings with a prompt longer than one step's budget still share",
          "[scheduler][prefix]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_batched_tokens = 64;
  Driver d(cfg);
  std::mt19937_64 rng(9);
  const auto prompt = random_tokens(rng, 200);
  REQUIRE(d.add(spec("a", prompt, 5)).ok());
  REQUIRE(d.add(spec("b", prompt, 5)).ok());
  int b_prompt_tokens_computed = 0;
  while (d.sched.has_unfinished_requests()) {
    const SchedulerOutput out = d.step();
    if (const ScheduledSeq* b = find_seq(out, "b"); b && d.tracks.at("b").output.size() <= 1) {
      b_prompt_tokens_computed += b->num_new_tokens;
    }
  }
  // b waits for budget, then finds a's blocks computed in earlier steps (and this one).
  CHECK(b_prompt_tokens_computed < 64);
  CHECK(d.compare_with_reference().empty());
}

TEST_CASE("same tokens with a different image share no blocks from the span on",
          "[scheduler][prefix][media]") {
  Driver d(base_config());
  std::mt19937_64 rng(10);
  const auto prompt = random_tokens(rng, 64);
  REQUIRE(d.add(spec("img1", prompt, 6, {MediaSpan{40, 20, 0xabc}})).ok());
  d.run_to_completion();
  REQUIRE(d.add(spec("img2", prompt, 6, {MediaSpan{40, 20, 0xdef}})).ok());
  REQUIRE(d.add(spec("img1-again", prompt, 6, {MediaSpan{40, 20, 0xabc}})).ok());
  d.run_to_completion();
  CHECK(d.tracks.at("img2").first_num_computed == 32);        // blocks 0-1 only
  CHECK(d.tracks.at("img1-again").first_num_computed == 48);  // all but the last block
  CHECK(d.compare_with_reference().empty());
  CHECK(d.tracks.at("img1").output != d.tracks.at("img2").output);
}

TEST_CASE("a preempted request resumes from its cached blocks and continues its output",
          "[scheduler][preemption]") {
  SchedulerConfig cfg = base_config();
  cfg.block_size = 4;
  cfg.num_blocks = 1 + 12;
  Driver d(cfg, /*use_stop=*/false);
  std::mt19937_64 rng(11);
  REQUIRE(d.add(spec("old", random_tokens(rng, 10), 30)).ok());
  REQUIRE(d.add(spec("new", random_tokens(rng, 10), 30)).ok());
  std::vector<std::string> preempted;
  int readmitted_with_hit = -1;
  while (d.sched.has_unfinished_requests()) {
    const SchedulerOutput out = d.step();
    preempted.insert(preempted.end(), out.preempted.begin(), out.preempted.end());
    if (const Request* r = d.sched.find("new");
        r && r->num_preemptions > 0 && r->num_cached_tokens > 0) {
      readmitted_with_hit = r->num_cached_tokens;
    }
  }
  REQUIRE_FALSE(preempted.empty());
  for (const auto& id : preempted) CHECK(id == "new");  // the newest is the victim
  CHECK(readmitted_with_hit > 0);
  CHECK(d.compare_with_reference().empty());
  CHECK(d.tracks.at("new").output.size() == 30);
}

// --- (d) admission, aborts, chunking, ordering, limits --------------------------------------

TEST_CASE("requests that can never run are rejected at once", "[scheduler][admission]") {
  SchedulerConfig cfg = base_config();
  cfg.block_size = 16;
  cfg.num_blocks = 1 + 4;  // 64 tokens of KV
  cfg.max_model_len = 1000;
  Scheduler s(cfg);
  std::vector<int32_t> p60(60, 5);

  AdmitResult r = s.add_request(spec("too-big", p60, 10));
  CHECK(r.status == AdmitStatus::kTooLong);
  CHECK_THAT(r.message, Catch::Contains("KV blocks") && Catch::Contains("too-big"));

  cfg.max_model_len = 50;
  Scheduler s2(cfg);
  r = s2.add_request(spec("too-long", std::vector<int32_t>(45, 5), 10));
  CHECK(r.status == AdmitStatus::kTooLong);
  CHECK_THAT(r.message, Catch::Contains("max_model_len 50"));

  CHECK(s.add_request(spec("empty", {}, 4)).status == AdmitStatus::kInvalidArgument);
  CHECK(s.add_request(spec("", p60, 4)).status == AdmitStatus::kInvalidArgument);
  CHECK(s.add_request(spec("zero", p60, 0)).status == AdmitStatus::kInvalidArgument);
  CHECK(s.add_request(spec("media", std::vector<int32_t>(10, 1), 2, {MediaSpan{8, 5, 1}})).status ==
        AdmitStatus::kInvalidArgument);
  CHECK(s.add_request(spec("overlap", std::vector<int32_t>(10, 1), 2,
                           {MediaSpan{0, 5, 1}, MediaSpan{4, 2, 1}}))
            .status == AdmitStatus::kInvalidArgument);
  CHECK(s.num_waiting() == 0);

  // Exactly fits: 60 + 5 = 65 tokens of context, 64 of them ever in the KV.
  CHECK(s.add_request(spec("fits", p60, 5)).ok());
  CHECK(s.add_request(spec("fits", p60, 1)).status == AdmitStatus::kAlreadyExists);
  CHECK(s.num_waiting() == 1);
}

TEST_CASE("a request that fills the whole cache runs to completion", "[scheduler][admission]") {
  SchedulerConfig cfg = base_config();
  cfg.num_blocks = 1 + 4;
  cfg.max_model_len = 1000;
  Driver d(cfg, /*use_stop=*/false);
  REQUIRE(d.add(spec("fits", std::vector<int32_t>(60, 5), 5)).ok());
  REQUIRE(d.add(spec("fits2", std::vector<int32_t>(60, 6), 5)).ok());
  d.max_steps = 200;
  d.run_to_completion();
  CHECK(d.tracks.at("fits").output.size() == 5);
  CHECK(d.tracks.at("fits").reason == FinishReason::kLength);
  CHECK(d.compare_with_reference().empty());
}

TEST_CASE("abort frees every block in every state", "[scheduler][abort]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_batched_tokens = 32;
  cfg.max_num_seqs = 2;
  Driver d(cfg);
  std::mt19937_64 rng(12);
  const int total = d.sched.stats().num_total_blocks;
  REQUIRE(d.add(spec("decoding", random_tokens(rng, 8), 100)).ok());
  d.step();
  REQUIRE(d.add(spec("prefilling", random_tokens(rng, 200), 10)).ok());
  REQUIRE(d.add(spec("waiting", random_tokens(rng, 20), 10)).ok());
  d.step();
  d.step();
  const Request* pre = d.sched.find("prefilling");
  REQUIRE(pre != nullptr);
  CHECK(pre->status == RequestStatus::kRunning);
  CHECK(pre->num_computed_tokens > 0);
  CHECK(pre->num_computed_tokens < 200);
  CHECK(d.sched.find("waiting")->status == RequestStatus::kWaiting);

  SECTION("waiting") {
    const int free_before = d.sched.stats().num_free_blocks;
    d.abort("waiting");
    CHECK(d.sched.find("waiting") == nullptr);
    CHECK(d.sched.stats().num_free_blocks == free_before);
  }
  SECTION("mid-prefill") {
    d.abort("prefilling");
    CHECK(d.sched.stats().num_running == 1);
  }
  SECTION("decoding") {
    d.abort("decoding");
  }
  SECTION("while its step is in flight") {
    SchedulerOutput out = d.sched.schedule();
    REQUIRE(find_seq(out, "prefilling") != nullptr);
    std::vector<int32_t> sampled = d.runner.run(out);
    CHECK(d.sched.abort("prefilling"));
    CHECK(d.sched.abort("decoding"));
    CHECK(d.sched.stats().num_free_blocks == total);
    REQUIRE_NOTHROW(d.sched.update(out, sampled));
    d.tracks.at("prefilling").aborted = d.tracks.at("prefilling").done = true;
    d.tracks.at("decoding").aborted = d.tracks.at("decoding").done = true;
  }
  CHECK(d.sched.check_invariants().empty());
  d.abort("decoding");
  d.abort("prefilling");
  d.abort("waiting");
  CHECK_FALSE(d.sched.abort("waiting"));
  CHECK(d.sched.stats().num_free_blocks == total);
  CHECK(d.sched.check_invariants().empty());
  CHECK(d.compare_with_reference().empty());
}

TEST_CASE("chunked prefill respects the token budget; decodes come first",
          "[scheduler][chunking]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_batched_tokens = 32;
  Driver d(cfg, /*use_stop=*/false);
  std::mt19937_64 rng(13);
  REQUIRE(d.add(spec("short", random_tokens(rng, 10), 50)).ok());
  SchedulerOutput out = d.step();
  REQUIRE(out.scheduled.size() == 1);
  CHECK(out.scheduled[0].samples);

  REQUIRE(d.add(spec("long", random_tokens(rng, 100), 3)).ok());
  std::vector<int> chunks;
  for (int i = 0; i < 4; ++i) {
    out = d.step();
    REQUIRE(out.scheduled.size() == 2);
    CHECK(out.scheduled[0].id == "short");  // the decode goes first
    CHECK(out.scheduled[0].num_new_tokens == 1);
    CHECK(out.scheduled[1].id == "long");
    CHECK(out.total_num_scheduled_tokens <= 32);
    chunks.push_back(out.scheduled[1].num_new_tokens);
    CHECK(out.scheduled[1].samples == (i == 3));
    CHECK(out.scheduled[1].num_computed_tokens == 31 * i);
  }
  CHECK(chunks == std::vector<int>{31, 31, 31, 7});
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
}

TEST_CASE("priority policy orders admission; FCFS orders by arrival", "[scheduler][priority]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_seqs = 1;
  for (auto policy : {SchedulingPolicy::kFcfs, SchedulingPolicy::kPriority}) {
    cfg.policy = policy;
    Scheduler s(cfg);
    REQUIRE(s.add_request(spec("low", std::vector<int32_t>(5, 1), 2, {}, 5, 0)).ok());
    REQUIRE(s.add_request(spec("high", std::vector<int32_t>(5, 2), 2, {}, 1, 1)).ok());
    REQUIRE(s.add_request(spec("high-later", std::vector<int32_t>(5, 3), 2, {}, 1, 2)).ok());
    SchedulerOutput out = s.schedule();
    REQUIRE(out.scheduled.size() == 1);
    CHECK(out.scheduled[0].id == (policy == SchedulingPolicy::kFcfs ? "low" : "high"));
  }
}

TEST_CASE("under the priority policy the lowest priority is preempted", "[scheduler][priority]") {
  SchedulerConfig cfg = base_config();
  cfg.block_size = 4;
  cfg.num_blocks = 1 + 8;
  cfg.policy = SchedulingPolicy::kPriority;
  Driver d(cfg, /*use_stop=*/false);
  std::mt19937_64 rng(14);
  // "background" arrives first but has the lower priority (higher value).
  REQUIRE(d.add(spec("background", random_tokens(rng, 8), 20, {}, 9, 0)).ok());
  REQUIRE(d.add(spec("urgent", random_tokens(rng, 8), 20, {}, 0, 1)).ok());
  std::vector<std::string> preempted;
  while (d.sched.has_unfinished_requests()) {
    const SchedulerOutput out = d.step();
    if (!out.scheduled.empty() && d.sched.find("urgent")) CHECK(out.scheduled[0].id == "urgent");
    preempted.insert(preempted.end(), out.preempted.begin(), out.preempted.end());
  }
  REQUIRE_FALSE(preempted.empty());
  for (const auto& id : preempted) CHECK(id == "background");
  CHECK(d.compare_with_reference().empty());
}

TEST_CASE("max_num_seqs caps running and scheduled sequences", "[scheduler][limits]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_seqs = 3;
  Driver d(cfg);
  std::mt19937_64 rng(15);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(
        d.add(spec(std::string(1, static_cast<char>('a' + i)), random_tokens(rng, 20), 10)).ok());
  }
  while (d.sched.has_unfinished_requests()) {
    const SchedulerOutput out = d.step();  // the driver checks both caps every step
    CHECK(d.sched.num_running() <= 3);
    CHECK(out.scheduled.size() <= 3);
  }
  CHECK(d.compare_with_reference().empty());
}

TEST_CASE("max_tokens is enforced by update() as a safety net", "[scheduler][limits]") {
  Driver d(base_config(), /*use_stop=*/false);
  REQUIRE(d.add(spec("a", {1, 2, 3}, 4)).ok());
  std::vector<FinishedRequest> finished;
  for (int i = 0; i < 4; ++i) {
    SchedulerOutput out = d.sched.schedule();
    auto sampled = d.runner.run(out);
    auto upd = d.sched.update(out, sampled);
    finished.insert(finished.end(), upd.finished.begin(), upd.finished.end());
  }
  REQUIRE(finished.size() == 1);
  CHECK(finished[0].id == "a");
  CHECK(finished[0].reason == FinishReason::kLength);
  CHECK_FALSE(d.sched.has_unfinished_requests());
  CHECK(d.sched.stats().num_free_blocks == d.sched.stats().num_total_blocks);
}

TEST_CASE("API misuse throws and changes nothing", "[scheduler][api]") {
  Scheduler s(base_config());
  REQUIRE(s.add_request(spec("a", {1, 2, 3}, 4)).ok());
  SchedulerOutput out = s.schedule();
  CHECK_THROWS_AS(s.schedule(), SchedulerError);  // previous step not updated
  CHECK_THROWS_AS(s.update(out, std::vector<int32_t>{}), SchedulerError);
  CHECK_THROWS_AS(s.update(out, std::vector<int32_t>{Scheduler::kNoToken}), SchedulerError);
  SchedulerOutput stale = out;
  stale.step_id = 99;
  CHECK_THROWS_AS(s.update(stale, std::vector<int32_t>{7}), SchedulerError);
  REQUIRE_NOTHROW(s.update(out, std::vector<int32_t>{7}));
  CHECK_THROWS_AS(s.update(out, std::vector<int32_t>{7}), SchedulerError);  // twice
  CHECK(s.find("a")->tokens.back() == 7);
  CHECK(s.find("a")->num_computed_tokens == 3);
  CHECK(s.check_invariants().empty());

  SchedulerConfig bad = base_config();
  bad.max_num_seqs = 0;
  CHECK_THROWS_WITH(Scheduler(bad), Catch::Contains("max_num_seqs"));
}

// --- encoder budget and encoder cache ------------------------------------------------------

TEST_CASE("random load with images under an encoder budget: same outputs, embeddings always "
          "cached when a chunk needs them", "[scheduler][invariance][encoder]") {
  struct Case {
    int budget, cache, blocks;
    uint64_t seed;
  };
  // From roomy to one image per step with room for about two images, with and without
  // preemption (the driver checks every step: budget, capacity, embeddings present).
  for (const Case c : {Case{256, 512, 601, 11}, Case{24, 48, 601, 12}, Case{24, 24, 1 + 26, 13},
                       Case{40, 60, 1 + 40, 14}}) {
    INFO("budget " << c.budget << " cache " << c.cache << " blocks " << c.blocks);
    SchedulerConfig cfg = base_config();
    cfg.max_num_encoder_tokens = c.budget;
    cfg.encoder_cache_tokens = c.cache;
    cfg.num_blocks = c.blocks;
    const auto r = run_workload(cfg, c.seed, 110, false, /*many_images=*/true);
    CHECK(r.stats.encoder_cache.encoded_items > 0);
    CHECK(r.stats.encoder_cache.hits > 0);  // five distinct images across ~40 prompts
    CHECK(r.stats.encoder_cache.used_tokens <= c.cache);
  }
}

TEST_CASE("a chunk stops before an image the step's encoder budget cannot take",
          "[scheduler][encoder]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_encoder_tokens = 10;
  cfg.encoder_cache_tokens = 40;
  Driver d(cfg);
  // Two different 10-token images at [4, 14) and [20, 30) of a 40-token prompt.
  REQUIRE(d.add(spec("a", std::vector<int32_t>(40, 5), 2, {{4, 10, 71}, {20, 10, 72}})).ok());
  SchedulerOutput s1 = d.step();
  REQUIRE(s1.scheduled.size() == 1);
  CHECK(s1.scheduled[0].num_new_tokens == 20);  // up to the second image
  REQUIRE(s1.encoder_inputs.size() == 1);
  CHECK(s1.encoder_inputs[0].content_hash == 71);
  CHECK(s1.encoder_inputs[0].media_index == 0);
  SchedulerOutput s2 = d.step();
  CHECK(s2.scheduled[0].num_computed_tokens == 20);
  CHECK(s2.scheduled[0].num_new_tokens == 20);
  REQUIRE(s2.encoder_inputs.size() == 1);
  CHECK(s2.encoder_inputs[0].content_hash == 72);
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  const EncoderCacheStats st = d.sched.stats().encoder_cache;
  CHECK(st.encoded_items == 2);
  CHECK(st.hits == 0);
  CHECK(st.used_tokens == 20);  // both stay cached after the request
}

TEST_CASE("a repeated image hits the encoder cache; an unused entry is evicted for a new one",
          "[scheduler][encoder]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_encoder_tokens = 16;
  cfg.encoder_cache_tokens = 16;  // one image
  cfg.enable_prefix_caching = false;  // so the second request recomputes the image span
  Driver d(cfg);
  std::mt19937_64 rng(7);
  const auto prompt = random_tokens(rng, 40);
  REQUIRE(d.add(spec("a", prompt, 3, {{8, 16, 501}})).ok());
  SchedulerOutput s = d.step();
  CHECK(s.encoder_inputs.size() == 1);
  d.run_to_completion();
  REQUIRE(d.add(spec("b", prompt, 3, {{8, 16, 501}})).ok());
  s = d.step();
  CHECK(s.encoder_inputs.empty());  // cached: no encode
  CHECK(s.encoder_evicted.empty());
  d.run_to_completion();
  EncoderCacheStats st = d.sched.stats().encoder_cache;
  CHECK(st.hits == 1);
  CHECK(st.encoded_items == 1);
  // A different image needs the space: the unreferenced entry goes.
  REQUIRE(d.add(spec("c", prompt, 3, {{8, 16, 502}})).ok());
  s = d.step();
  REQUIRE(s.encoder_inputs.size() == 1);
  CHECK(s.encoder_inputs[0].content_hash == 502);
  REQUIRE(s.encoder_evicted.size() == 1);
  CHECK(s.encoder_evicted[0] == 501);
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  st = d.sched.stats().encoder_cache;
  CHECK(st.evictions == 1);
}

TEST_CASE("an image in use is never evicted: the next request waits for the cache",
          "[scheduler][encoder]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_batched_tokens = 8;  // the first image takes two steps of prefill
  cfg.max_num_encoder_tokens = 16;
  cfg.encoder_cache_tokens = 16;
  Driver d(cfg);
  REQUIRE(d.add(spec("a", std::vector<int32_t>(30, 3), 2, {{0, 16, 601}})).ok());
  REQUIRE(d.add(spec("b", std::vector<int32_t>(30, 4), 2, {{0, 16, 602}})).ok());
  SchedulerOutput s = d.step();
  REQUIRE(s.scheduled.size() == 1);  // b cannot get its image while a's is in use
  CHECK(s.scheduled[0].id == "a");
  s = d.step();
  CHECK(find_seq(s, "b") == nullptr);
  CHECK(s.encoder_evicted.empty());
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  CHECK(d.sched.stats().encoder_cache.evictions == 1);
}

TEST_CASE("an image larger than the encoder budget or cache is refused at admission",
          "[scheduler][encoder][admission]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_encoder_tokens = 16;
  cfg.encoder_cache_tokens = 32;
  Scheduler s(cfg);
  AdmitResult r = s.add_request(spec("big", std::vector<int32_t>(40, 1), 2, {{2, 17, 9}}));
  CHECK(r.status == AdmitStatus::kTooLong);
  CHECK_THAT(r.message, Catch::Contains("17 tokens") && Catch::Contains("encoder budget is 16"));
  cfg.max_num_encoder_tokens = 64;
  Scheduler s2(cfg);
  r = s2.add_request(spec("big", std::vector<int32_t>(60, 1), 2, {{2, 40, 9}}));
  CHECK(r.status == AdmitStatus::kTooLong);
  CHECK_THAT(r.message, Catch::Contains("cache holds 32"));
  CHECK(s2.add_request(spec("ok", std::vector<int32_t>(60, 1), 2, {{2, 32, 9}})).ok());
  cfg.encoder_cache_tokens = 0;
  CHECK_THROWS_AS(Scheduler(cfg), SchedulerError);  // one of the pair set
}

TEST_CASE("n > 1 siblings and a prompt that ends in an image share one encode",
          "[scheduler][encoder]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_encoder_tokens = 12;
  cfg.encoder_cache_tokens = 12;
  cfg.max_num_batched_tokens = 21;  // the first chunk ends one token before the prompt's end
  Driver d(cfg);
  std::mt19937_64 rng(9);
  const auto prompt = random_tokens(rng, 22);
  for (const char* id : {"s0", "s1"}) REQUIRE(d.add(spec(id, prompt, 4, {{10, 12, 801}})).ok());
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  const EncoderCacheStats st = d.sched.stats().encoder_cache;
  CHECK(st.encoded_items == 1);
  CHECK(st.hits >= 1);
}

TEST_CASE("media_in_one_chunk: a prefill chunk never ends inside an image",
          "[scheduler][encoder]") {
  SchedulerConfig cfg = base_config();
  cfg.max_num_batched_tokens = 8;
  cfg.max_num_encoder_tokens = 8;
  cfg.encoder_cache_tokens = 32;
  cfg.media_in_one_chunk = true;
  Driver d(cfg);
  // Images at [5, 11) and [13, 19) of a 24-token prompt; chunks of 8 would end at 8 and 16.
  REQUIRE(d.add(spec("a", std::vector<int32_t>(24, 5), 2, {{5, 6, 81}, {13, 6, 82}})).ok());
  std::vector<std::pair<int, int>> chunks;
  while (true) {
    SchedulerOutput s = d.step();
    const auto* seq = find_seq(s, "a");
    if (!seq || seq->num_computed_tokens >= 24) break;
    chunks.emplace_back(seq->num_computed_tokens, seq->num_new_tokens);
  }
  // Stops before each image, then takes it whole.
  REQUIRE(chunks.size() >= 4);
  CHECK(chunks[0] == std::pair<int, int>{0, 5});
  CHECK(chunks[1] == std::pair<int, int>{5, 8});
  CHECK(chunks[2] == std::pair<int, int>{13, 8});
  for (const auto& [start, n] : chunks)
    for (const auto& [ms, ml] : {std::pair<int, int>{5, 6}, {13, 6}})
      CHECK((start + n <= ms || start + n >= ms + ml || start >= ms + ml));
  d.run_to_completion();
  CHECK(d.compare_with_reference().empty());
  // An image longer than a step can hold is refused at admission.
  Scheduler s2(cfg);
  AdmitResult r = s2.add_request(spec("big", std::vector<int32_t>(30, 1), 2, {{2, 9, 9}}));
  CHECK(r.status == AdmitStatus::kTooLong);
  CHECK_THAT(r.message, Catch::Contains("in one chunk") && Catch::Contains("at most 8"));
}
