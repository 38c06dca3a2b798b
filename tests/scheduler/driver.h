// Test driver: plays the engine's part around a Scheduler and a FakeRunner. Each step()
// plans, runs the fake model, feeds the sampled tokens back, applies the engine's stop
// rule with finish(), and proves the scheduler's invariants. It records every request's
// output so tests can compare it with reference_generate().
#pragma once

#include <algorithm>
#include <map>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "scheduler/scheduler.h"
#include "tests/scheduler/fake_runner.h"

namespace iris::sched::testing {

struct Track {
  std::vector<int32_t> prompt;
  std::vector<MediaSpan> media;
  int max_tokens = 0;
  std::vector<int32_t> output;
  bool done = false;
  bool aborted = false;
  FinishReason reason = FinishReason::kStop;
  int first_num_computed = -1;  // start position the first time it was scheduled
  int first_num_new = -1;
};

class Driver {
 public:
  explicit Driver(const SchedulerConfig& cfg, bool use_stop = true)
      : cfg_(cfg),
        sched(cfg),
        runner(cfg.block_size, cfg.num_blocks, cfg.reserve_null_block),
        use_stop_(use_stop) {}

  AdmitResult add(RequestSpec spec) {
    Track t;
    t.prompt = spec.prompt;
    t.media = spec.media;
    std::sort(t.media.begin(), t.media.end(),
              [](const MediaSpan& a, const MediaSpan& b) { return a.start_token < b.start_token; });
    t.max_tokens = spec.max_tokens;
    const std::string id = spec.id;
    auto media = spec.media;
    AdmitResult r = sched.add_request(std::move(spec));
    if (r.ok()) {
      tracks[id] = std::move(t);
      runner.set_media(r.handle, std::move(media));
    }
    return r;
  }

  void abort(const std::string& id) {
    if (sched.abort(id)) {
      tracks.at(id).done = true;
      tracks.at(id).aborted = true;
      tracks.at(id).reason = FinishReason::kAbort;
    }
  }

  // One engine iteration. Throws std::logic_error when a check fails.
  SchedulerOutput step() {
    if (num_steps >= max_steps) throw std::logic_error("requests never finished");
    SchedulerOutput out = sched.schedule();
    validate(out);
    if (cfg_.budgets_encoder()) check_encoder(out);
    std::vector<int32_t> sampled = runner.run(out);
    UpdateOutput upd = sched.update(out, sampled);
    ++num_steps;
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const ScheduledSeq& s = out.scheduled[i];
      Track& t = tracks.at(std::string(s.id));
      if (t.first_num_computed < 0) {
        t.first_num_computed = s.num_computed_tokens;
        t.first_num_new = s.num_new_tokens;
      }
      if (s.samples) t.output.push_back(sampled[i]);
    }
    for (const FinishedRequest& f : upd.finished) {
      Track& t = tracks.at(f.id);
      t.done = true;
      t.reason = f.reason;
    }
    for (const FinishedRequest& f : out.finished) {
      Track& t = tracks.at(f.id);
      t.done = true;
      t.reason = f.reason;
    }
    if (use_stop_) {
      for (size_t i = 0; i < out.scheduled.size(); ++i) {
        const ScheduledSeq& s = out.scheduled[i];
        const std::string id(s.id);
        Track& t = tracks.at(id);
        if (!s.samples || t.done || !is_stop(sampled[i])) continue;
        if (!sched.finish(id, FinishReason::kStop)) throw std::logic_error("finish failed: " + id);
        t.done = true;
        t.reason = FinishReason::kStop;
      }
    }
    if (std::string err = sched.check_invariants(); !err.empty()) {
      throw std::logic_error("step " + std::to_string(num_steps) + ": " + err);
    }
    return out;
  }

  // Steps until no request is left (or max_steps, which throws).
  void run_to_completion() {
    while (sched.has_unfinished_requests()) step();
  }

  // Output of every request equals its solo reference (a prefix for aborted ones).
  // Returns "" or what differs.
  std::string compare_with_reference() const {
    for (const auto& [id, t] : tracks) {
      const auto ref = reference_generate(t.prompt, t.media, t.max_tokens, use_stop_);
      if (t.aborted) {
        if (t.output.size() > ref.size() ||
            !std::equal(t.output.begin(), t.output.end(), ref.begin())) {
          return "aborted request " + id + " diverged from its reference";
        }
      } else if (!t.done) {
        return "request " + id + " did not finish";
      } else if (t.output != ref) {
        return "request " + id + " produced " + std::to_string(t.output.size()) +
               " tokens that differ from its solo reference (" + std::to_string(ref.size()) +
               " tokens)";
      }
    }
    return {};
  }

  SchedulerConfig cfg_;
  Scheduler sched;
  FakeRunner runner;
  std::map<std::string, Track> tracks;
  int num_steps = 0;
  int max_steps = 20000;  // a scheduler that stops making progress fails instead of hanging
  // The engine's side of the encoder cache, mirrored from the steps' evictions and inputs.
  std::map<uint64_t, int64_t> encoder_cache;  // content hash -> tokens
  int64_t encoded_items = 0;

 private:
  void validate(const SchedulerOutput& out) const {
    int total = 0;
    std::unordered_set<RequestHandle> seen;
    for (const ScheduledSeq& s : out.scheduled) {
      if (s.num_new_tokens <= 0) throw std::logic_error("empty chunk scheduled");
      if (!seen.insert(s.handle).second) throw std::logic_error("request scheduled twice");
      total += s.num_new_tokens;
    }
    if (total != out.total_num_scheduled_tokens) throw std::logic_error("token total mismatch");
    if (total > cfg_.max_num_batched_tokens) throw std::logic_error("token budget exceeded");
    if (static_cast<int>(out.scheduled.size()) > cfg_.max_num_seqs) {
      throw std::logic_error("max_num_seqs exceeded");
    }
    if (sched.num_running() > cfg_.max_num_seqs) throw std::logic_error("too many running");
  }

  // Plays the engine: drop the evicted entries, encode the inputs, then every media span a
  // scheduled chunk touches must have its embeddings in the cache.
  void check_encoder(const SchedulerOutput& out) {
    for (uint64_t h : out.encoder_evicted) {
      if (!encoder_cache.erase(h)) throw std::logic_error("evicted an encoder entry never encoded");
    }
    int64_t tokens = 0;
    for (const EncoderInput& e : out.encoder_inputs) {
      const Track& t = tracks.at(std::string(e.id));
      if (e.media_index < 0 || e.media_index >= static_cast<int>(t.media.size()) ||
          t.media[e.media_index].content_hash != e.content_hash) {
        throw std::logic_error("encoder input names the wrong media span");
      }
      if (!encoder_cache.emplace(e.content_hash, t.media[e.media_index].num_tokens).second) {
        throw std::logic_error("encoder input for an entry that is already cached");
      }
      tokens += t.media[e.media_index].num_tokens;
      ++encoded_items;
    }
    if (tokens > cfg_.max_num_encoder_tokens) throw std::logic_error("encoder budget exceeded");
    int64_t cached = 0;
    for (const auto& [h, n] : encoder_cache) cached += n;
    if (cached > cfg_.encoder_cache_tokens) throw std::logic_error("encoder cache over capacity");
    for (const ScheduledSeq& s : out.scheduled) {
      const Track& t = tracks.at(std::string(s.id));
      const int64_t lo = s.num_computed_tokens, hi = lo + s.num_new_tokens;
      for (const MediaSpan& m : t.media) {
        if (m.start_token < hi && m.start_token + m.num_tokens > lo &&
            !encoder_cache.count(m.content_hash)) {
          throw std::logic_error("request " + t_id(s) + " runs a chunk over a media span whose "
                                 "embeddings are not cached");
        }
      }
    }
  }
  static std::string t_id(const ScheduledSeq& s) { return std::string(s.id); }

  bool use_stop_;
};

}  // namespace iris::sched::testing
