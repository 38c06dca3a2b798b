// Test driver: plays the engine's part around a Scheduler and a FakeRunner. Each step()
// plans, runs the fake model, feeds the sampled tokens back, applies the engine's stop
// rule with finish(), and proves the scheduler's invariants. It records every request's
// output so tests can compare it with reference_generate().
#pragma once

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

  bool use_stop_;
};

}  // namespace iris::sched::testing
