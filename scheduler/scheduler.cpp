// The continuous-batching policy: admission checks, the three passes of a step (decodes,
// running prefill chunks, waiting requests), preemption by recomputation and the feedback
// of sampled tokens. The rules are in scheduler.h; the block bookkeeping is in
// kv_block_manager.cpp.
#include "scheduler/scheduler.h"

#include <algorithm>
#include <sstream>

namespace iris::sched {

const char* to_string(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kError:
      return "error";
  }
  return "unknown";
}

namespace {
SchedulerConfig checked(const SchedulerConfig& c) {
  if (std::string err = c.validate(); !err.empty()) throw SchedulerError("Scheduler: " + err);
  return c;
}
}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config)
    : config_(checked(config)),
      max_model_len_(config_.effective_max_model_len()),
      kv_(config_),
      encoder_cache_(config_.encoder_cache_tokens) {
  running_.reserve(static_cast<size_t>(config_.max_num_seqs));
  step_requests_.reserve(static_cast<size_t>(config_.max_num_seqs));
  requests_.reserve(static_cast<size_t>(config_.max_num_seqs) * 2);
}

Scheduler::~Scheduler() = default;

Scheduler::OrderKey Scheduler::order_key(const Request& r) const {
  return OrderKey{config_.policy == SchedulingPolicy::kPriority ? r.priority : 0, r.arrival_seq,
                  r.handle};
}

// --- admission ----------------------------------------------------------------------------

AdmitResult Scheduler::add_request(RequestSpec spec) {
  auto reject = [&](AdmitStatus status, const std::string& why) {
    return AdmitResult{status, "request '" + spec.id + "': " + why, 0};
  };
  if (spec.id.empty()) return reject(AdmitStatus::kInvalidArgument, "empty request id");
  if (requests_.count(spec.id)) {
    return reject(AdmitStatus::kAlreadyExists, "a live request already has this id");
  }
  if (spec.prompt.empty()) return reject(AdmitStatus::kInvalidArgument, "empty prompt");
  if (spec.max_tokens < 1) {
    return reject(AdmitStatus::kInvalidArgument,
                  "max_tokens must be >= 1, got " + std::to_string(spec.max_tokens));
  }
  const int64_t prompt_len = static_cast<int64_t>(spec.prompt.size());
  std::sort(spec.media.begin(), spec.media.end(),
            [](const MediaSpan& a, const MediaSpan& b) { return a.start_token < b.start_token; });
  int64_t media_end = 0;
  for (const MediaSpan& m : spec.media) {
    if (m.start_token < media_end || m.num_tokens <= 0 ||
        m.start_token + m.num_tokens > prompt_len) {
      std::ostringstream os;
      os << "media span [" << m.start_token << ", " << m.start_token + m.num_tokens
         << ") is empty, overlaps another or lies outside the " << prompt_len << "-token prompt";
      return reject(AdmitStatus::kInvalidArgument, os.str());
    }
    media_end = m.start_token + m.num_tokens;
    if (config_.media_in_one_chunk && m.num_tokens > config_.max_num_batched_tokens) {
      std::ostringstream os;
      os << "a media item of " << m.num_tokens << " tokens must be prefilled in one chunk, but "
         << "a step holds at most " << config_.max_num_batched_tokens
         << " tokens (--max-num-batched-tokens)";
      return reject(AdmitStatus::kTooLong, os.str());
    }
    if (config_.budgets_encoder() &&
        (m.num_tokens > config_.max_num_encoder_tokens || m.num_tokens > config_.encoder_cache_tokens)) {
      std::ostringstream os;
      os << "a media item of " << m.num_tokens << " tokens can never be encoded: the encoder "
         << "budget is " << config_.max_num_encoder_tokens << " tokens per step and the encoder "
         << "cache holds " << config_.encoder_cache_tokens << " tokens";
      return reject(AdmitStatus::kTooLong, os.str());
    }
  }
  const int64_t context = prompt_len + spec.max_tokens;
  if (context > max_model_len_) {
    std::ostringstream os;
    os << "prompt (" << prompt_len << " tokens) + max_tokens (" << spec.max_tokens
       << ") = " << context << " exceeds max_model_len " << max_model_len_;
    return reject(AdmitStatus::kTooLong, os.str());
  }
  // The last sampled token is never fed, so the KV holds at most context - 1 tokens.
  if (kv_.blocks_for(context - 1) > kv_.num_total_blocks()) {
    std::ostringstream os;
    os << "prompt + max_tokens needs " << kv_.blocks_for(context - 1) << " KV blocks of "
       << kv_.block_size() << " tokens but the whole cache has " << kv_.num_total_blocks();
    return reject(AdmitStatus::kTooLong, os.str());
  }

  auto req = std::make_unique<Request>();
  req->id = std::move(spec.id);
  req->handle = next_handle_++;
  req->num_prompt_tokens = static_cast<int>(prompt_len);
  req->tokens = std::move(spec.prompt);
  req->tokens.reserve(static_cast<size_t>(context));
  req->max_tokens = spec.max_tokens;
  req->priority = spec.priority;
  req->arrival_seq = spec.arrival_seq;
  req->media = std::move(spec.media);
  if (config_.budgets_encoder()) req->media_held.assign(req->media.size(), 0);
  req->cache_salt = spec.cache_salt;
  req->status = RequestStatus::kWaiting;
  Request& r = *req;
  waiting_.insert(WaitingEntry{order_key(r), &r});
  const RequestHandle handle = r.handle;
  requests_.emplace(r.id, std::move(req));
  return AdmitResult{AdmitStatus::kOk, {}, handle};
}

// --- running-list bookkeeping -------------------------------------------------------------

void Scheduler::insert_running(Request& r) {
  const OrderKey key = order_key(r);
  auto pos =
      std::upper_bound(running_.begin(), running_.end(), key,
                       [&](const OrderKey& k, const Request* x) { return k < order_key(*x); });
  running_.insert(pos, &r);
}

void Scheduler::remove_running(Request& r) {
  if (!running_.empty() && running_.back() == &r) {
    running_.pop_back();
    return;
  }
  const OrderKey key = order_key(r);
  auto pos =
      std::lower_bound(running_.begin(), running_.end(), key,
                       [&](const Request* x, const OrderKey& k) { return order_key(*x) < k; });
  if (pos == running_.end() || *pos != &r) {
    throw SchedulerError("internal: request '" + r.id + "' missing from the running list");
  }
  running_.erase(pos);
}

// --- one step -----------------------------------------------------------------------------

void Scheduler::emit(Request& r, int num_new_tokens, SchedulerOutput& out) {
  ScheduledSeq& s = out.scheduled.emplace_back();
  const int start = r.num_computed_tokens;
  s.handle = r.handle;
  s.id = r.id;
  s.num_new_tokens = num_new_tokens;
  s.num_computed_tokens = start;
  s.new_token_ids.assign(r.tokens.begin() + start, r.tokens.begin() + start + num_new_tokens);
  s.block_table.assign(r.block_table.begin(), r.block_table.end());
  s.samples = start + num_new_tokens == r.num_tokens();
  r.step_index = static_cast<int>(out.scheduled.size()) - 1;
  step_requests_.push_back(&r);
  budget_ -= num_new_tokens;
  out.total_num_scheduled_tokens += num_new_tokens;
}

// Takes a request back out of the step being planned. Its blocks are still held; the
// caller frees them (preemption), and KVBlockManager::free uncaches what was registered
// for the never-run chunk because num_computed_tokens did not advance.
void Scheduler::unschedule(Request& r, SchedulerOutput& out) {
  ScheduledSeq& s = out.scheduled[r.step_index];
  budget_ += s.num_new_tokens;
  out.total_num_scheduled_tokens -= s.num_new_tokens;
  step_requests_[r.step_index] = nullptr;
  r.step_index = -1;
  ++num_removed_;
}

void Scheduler::preempt(Request& r, SchedulerOutput& out) {
  if (r.step_index >= 0) unschedule(r, out);
  kv_.free(r);
  release_media(r, /*all=*/true);
  remove_running(r);
  r.num_computed_tokens = 0;
  r.status = RequestStatus::kWaiting;
  ++r.num_preemptions;
  ++num_preemptions_;
  waiting_.insert(WaitingEntry{order_key(r), &r});
  out.preempted.push_back(r.id);
}

void Scheduler::schedule_decodes(SchedulerOutput& out) {
  for (size_t i = 0; i < running_.size(); ++i) {
    Request& r = *running_[i];
    if (r.num_uncomputed_tokens() != 1) continue;
    if (budget_ <= 0 ||
        step_requests_.size() - num_removed_ >= static_cast<size_t>(config_.max_num_seqs)) {
      break;
    }
    // A prompt's last token may be an image placeholder (a chunk ended just before it).
    if (r.num_computed_tokens < r.num_prompt_tokens &&
        reserve_media(r, r.num_computed_tokens, 1, out) < 1) {
      settle_media(r, r.num_computed_tokens, 0);
      continue;
    }
    bool scheduled = true;
    // The victim is always the lowest-ordered running request: after r in this pass, so
    // not yet scheduled, or r itself.
    while (!kv_.allocate_slots(r, 1)) {
      Request& victim = *running_.back();
      preempt(victim, out);
      if (&victim == &r) {
        scheduled = false;
        break;
      }
    }
    settle_media(r, r.num_computed_tokens, scheduled ? 1 : 0);
    if (scheduled) emit(r, 1, out);
  }
}

void Scheduler::schedule_running_prefills(SchedulerOutput& out) {
  for (size_t i = 0; i < running_.size(); ++i) {
    Request& r = *running_[i];
    if (r.step_index >= 0 || r.num_uncomputed_tokens() <= 1) continue;
    if (budget_ <= 0 ||
        step_requests_.size() - num_removed_ >= static_cast<size_t>(config_.max_num_seqs)) {
      break;
    }
    // The chunk stops before an image that neither fits this step's encoder budget nor the
    // encoder cache; it goes on from there in a later step.
    const int limit = reserve_media(
        r, r.num_computed_tokens,
        limit_to_whole_media(r, r.num_computed_tokens, std::min(r.num_uncomputed_tokens(), budget_)),
        out);
    int n = limit;
    while (n > 0 && !kv_.allocate_slots(r, n)) {
      Request& victim = *running_.back();
      if (&victim != &r) {
        // Ordered after r; it may be a decode planned in pass 1, which gives its token back.
        preempt(victim, out);
        n = std::min(limit, budget_);
        continue;
      }
      // r is the lowest-ordered request: take what the free blocks hold, or wait.
      n = static_cast<int>(std::min<int64_t>(n, kv_.max_new_tokens_that_fit(r)));
    }
    settle_media(r, r.num_computed_tokens, std::max(n, 0));
    if (n > 0) emit(r, n, out);
  }
}

void Scheduler::schedule_waiting(SchedulerOutput& out) {
  auto it = waiting_.begin();
  while (it != waiting_.end()) {
    if (budget_ <= 0 || running_.size() >= static_cast<size_t>(config_.max_num_seqs) ||
        step_requests_.size() - num_removed_ >= static_cast<size_t>(config_.max_num_seqs)) {
      break;
    }
    Request& r = *it->req;
    ComputedBlocks computed = kv_.get_computed_blocks(r);
    const int n = reserve_media(
        r, computed.num_tokens,
        limit_to_whole_media(r, computed.num_tokens,
                             std::min(r.num_tokens() - computed.num_tokens, budget_)),
        out);
    if (n <= 0) {  // its first image waits for encoder budget or cache space
      settle_media(r, computed.num_tokens, 0);
      break;
    }
    if (!kv_.allocate_slots(r, n, &computed)) {
      settle_media(r, computed.num_tokens, 0);
      // Admission guarantees every request fits an empty cache; if that ever fails, end the
      // request rather than let it block the queue forever.
      if (running_.empty() && kv_.num_free_blocks() == kv_.num_total_blocks() &&
          !kv_.can_allocate(r, n)) {
        ++it;
        out.finished.push_back(
            FinishedRequest{r.handle, r.id, FinishReason::kError,
                            "request '" + r.id + "' does not fit in the empty KV cache"});
        retire(r);
        continue;
      }
      break;  // FCFS: nobody overtakes the head of the queue
    }
    settle_media(r, computed.num_tokens, n);
    r.num_computed_tokens = computed.num_tokens;
    r.num_cached_tokens = computed.num_tokens;
    r.status = RequestStatus::kRunning;
    it = waiting_.erase(it);
    insert_running(r);
    emit(r, n, out);
  }
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  schedule(out);
  return out;
}

void Scheduler::schedule(SchedulerOutput& out) {
  if (step_in_flight_) {
    throw SchedulerError("schedule(): step " + std::to_string(step_id_) +
                         " is still in flight; call update() first");
  }
  retired_.clear();
  out.step_id = ++step_id_;
  out.scheduled.clear();
  out.preempted.clear();
  out.finished.clear();
  out.encoder_evicted.clear();
  out.encoder_inputs.clear();
  encoder_budget_ = config_.max_num_encoder_tokens;
  out.total_num_scheduled_tokens = 0;
  out.scheduled.reserve(static_cast<size_t>(config_.max_num_seqs));
  step_requests_.clear();
  budget_ = config_.max_num_batched_tokens;
  num_removed_ = 0;

  schedule_decodes(out);
  schedule_running_prefills(out);
  // Under memory pressure (someone was just preempted) admit nobody new.
  if (out.preempted.empty()) schedule_waiting(out);

  if (num_removed_ > 0) {
    size_t w = 0;
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      if (!step_requests_[i]) continue;
      if (w != i) {
        out.scheduled[w] = std::move(out.scheduled[i]);
        step_requests_[w] = step_requests_[i];
      }
      step_requests_[w]->step_index = static_cast<int>(w);
      ++w;
    }
    out.scheduled.resize(w);
    step_requests_.resize(w);
    num_removed_ = 0;
  }
  step_in_flight_ = !out.scheduled.empty();
}

UpdateOutput Scheduler::update(const SchedulerOutput& out,
                               std::span<const int32_t> sampled_tokens) {
  UpdateOutput result;
  if (out.scheduled.empty() && !step_in_flight_) return result;
  if (!step_in_flight_ || out.step_id != step_id_) {
    throw SchedulerError("update(): output of step " + std::to_string(out.step_id) +
                         " is not the step in flight (" +
                         (step_in_flight_ ? std::to_string(step_id_) : std::string("none")) + ")");
  }
  if (sampled_tokens.size() != out.scheduled.size()) {
    throw SchedulerError("update(): " + std::to_string(sampled_tokens.size()) +
                         " sampled tokens for " + std::to_string(out.scheduled.size()) +
                         " scheduled sequences");
  }
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    if (step_requests_[i] && out.scheduled[i].samples && sampled_tokens[i] < 0) {
      throw SchedulerError("update(): no token sampled for request '" +
                           std::string(out.scheduled[i].id) + "', whose chunk samples");
    }
  }
  step_in_flight_ = false;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    Request* r = step_requests_[i];
    if (!r) continue;  // finished or aborted while the step ran
    const ScheduledSeq& s = out.scheduled[i];
    r->step_index = -1;
    r->num_computed_tokens += s.num_new_tokens;
    if (!r->media_held.empty()) release_media(*r, /*all=*/false);
    if (!s.samples) continue;
    r->tokens.push_back(sampled_tokens[i]);
    if (r->num_output_tokens() >= r->max_tokens || r->num_tokens() >= max_model_len_) {
      result.finished.push_back(FinishedRequest{r->handle, r->id, FinishReason::kLength, {}});
      retire(*r);
    }
  }
  step_requests_.clear();
  return result;
}

// --- media kept whole ---------------------------------------------------------------------

int Scheduler::limit_to_whole_media(const Request& r, int start, int n) const {
  if (!config_.media_in_one_chunk || n <= 0) return n;
  const int64_t end = static_cast<int64_t>(start) + n;
  for (const MediaSpan& m : r.media) {
    if (m.start_token >= end) break;
    const int64_t m_end = m.start_token + m.num_tokens;
    if (m_end <= end || m_end <= start) continue;  // inside the chunk, or already computed
    return static_cast<int>(std::max<int64_t>(0, m.start_token - start));
  }
  return n;
}

// --- encoder budget -----------------------------------------------------------------------

int Scheduler::reserve_media(Request& r, int start, int n, SchedulerOutput& out) {
  media_taken_.clear();
  if (r.media_held.empty() || n <= 0) return n;
  const int64_t end = static_cast<int64_t>(start) + n;
  std::vector<uint64_t>& evicted = evicted_scratch_;
  for (size_t i = 0; i < r.media.size(); ++i) {
    const MediaSpan& m = r.media[i];
    if (m.start_token >= end) break;
    if (m.start_token + m.num_tokens <= start || r.media_held[i]) continue;
    const uint64_t h = m.content_hash;
    if (encoder_cache_.contains(h)) {
      encoder_cache_.acquire(h);
      media_taken_.emplace_back(static_cast<int>(i), false);
    } else if (m.num_tokens <= encoder_budget_ &&
               m.num_tokens <= encoder_cache_.available_tokens()) {
      evicted.clear();
      encoder_cache_.allocate(h, m.num_tokens, evicted);
      encoder_budget_ -= m.num_tokens;
      for (uint64_t e : evicted) {
        // An entry allocated earlier in this step never reached the engine: drop its input.
        auto it = std::find_if(out.encoder_inputs.begin(), out.encoder_inputs.end(),
                               [&](const EncoderInput& x) { return x.content_hash == e; });
        if (it != out.encoder_inputs.end()) {
          out.encoder_inputs.erase(it);
        } else {
          out.encoder_evicted.push_back(e);
        }
      }
      out.encoder_inputs.push_back(EncoderInput{r.handle, r.id, static_cast<int>(i), h});
      media_taken_.emplace_back(static_cast<int>(i), true);
    } else {
      return static_cast<int>(std::max<int64_t>(0, m.start_token - start));
    }
    r.media_held[i] = 1;
  }
  return n;
}

void Scheduler::settle_media(Request& r, int start, int n_final) {
  const int64_t end = static_cast<int64_t>(start) + n_final;
  for (const auto& [i, allocated] : media_taken_) {
    const MediaSpan& m = r.media[i];
    if (!r.media_held[i]) continue;  // r itself was preempted meanwhile
    if (n_final > 0 && m.start_token < end) {
      encoder_cache_.count_query(/*hit=*/!allocated);
      continue;
    }
    // Not part of the chunk after all; an entry allocated for it is still encoded this step
    // and stays cached for whoever needs it next.
    r.media_held[i] = 0;
    encoder_cache_.release(m.content_hash);
  }
  media_taken_.clear();
}

void Scheduler::release_media(Request& r, bool all) {
  for (size_t i = 0; i < r.media_held.size(); ++i) {
    if (!r.media_held[i]) continue;
    const MediaSpan& m = r.media[i];
    if (!all && m.start_token + m.num_tokens > r.num_computed_tokens) continue;
    r.media_held[i] = 0;
    encoder_cache_.release(m.content_hash);
  }
}

// --- ending requests ----------------------------------------------------------------------

void Scheduler::retire(Request& r) {
  if (r.status == RequestStatus::kRunning) {
    kv_.free(r);
    release_media(r, /*all=*/true);
    remove_running(r);
  } else if (r.status == RequestStatus::kWaiting) {
    waiting_.erase(WaitingEntry{order_key(r), &r});
  }
  if (step_in_flight_ && r.step_index >= 0) step_requests_[r.step_index] = nullptr;
  r.step_index = -1;
  r.status = RequestStatus::kFinished;
  auto node = requests_.extract(r.id);
  retired_.push_back(std::move(node.mapped()));
}

bool Scheduler::finish(const std::string& id, FinishReason /*reason*/) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  retire(*it->second);
  return true;
}

// --- introspection ------------------------------------------------------------------------

const Request* Scheduler::find(const std::string& id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second.get();
}

SchedulerStats Scheduler::stats() const {
  const KvCacheStats kv = kv_.stats();
  SchedulerStats s;
  s.num_running = num_running();
  s.num_waiting = num_waiting();
  s.num_total_blocks = kv.num_total_blocks;
  s.num_free_blocks = kv.num_free_blocks;
  s.prefix_cache_query_tokens = kv.query_tokens;
  s.num_cached_tokens_hit = kv.hit_tokens;
  s.prefix_cache_hit_rate = kv.hit_rate();
  s.num_preemptions = num_preemptions_;
  s.num_steps = step_id_;
  if (config_.budgets_encoder()) s.encoder_cache = encoder_cache_.stats();
  return s;
}

std::string Scheduler::check_invariants() const {
  std::ostringstream err;
  for (const WaitingEntry& w : waiting_) {
    if (w.req->status != RequestStatus::kWaiting || !w.req->block_table.empty()) {
      err << "waiting request '" << w.req->id << "' holds " << w.req->block_table.size()
          << " blocks";
      return err.str();
    }
  }
  for (size_t i = 0; i < running_.size(); ++i) {
    const Request& r = *running_[i];
    if (r.status != RequestStatus::kRunning) {
      err << "request '" << r.id << "' is on the running list but not running";
      return err.str();
    }
    if (i > 0 && !(order_key(*running_[i - 1]) < order_key(r))) {
      err << "running list out of order at '" << r.id << "'";
      return err.str();
    }
    if (!step_in_flight_) {
      if (static_cast<int>(r.block_table.size()) != kv_.blocks_for(r.num_computed_tokens)) {
        err << "request '" << r.id << "' has " << r.block_table.size() << " blocks for "
            << r.num_computed_tokens << " computed tokens";
        return err.str();
      }
      if (r.num_computed_tokens >= r.num_tokens()) {
        err << "request '" << r.id << "' has nothing left to compute";
        return err.str();
      }
    }
  }
  if (running_.size() + waiting_.size() != requests_.size()) {
    err << running_.size() << " running + " << waiting_.size() << " waiting != " << requests_.size()
        << " live requests";
    return err.str();
  }
  if (config_.budgets_encoder()) {
    std::unordered_map<uint64_t, int> refs;
    for (const Request* r : running_)
      for (size_t i = 0; i < r->media.size(); ++i)
        if (r->media_held[i]) ++refs[r->media[i].content_hash];
    for (const WaitingEntry& w : waiting_)
      for (uint8_t held : w.req->media_held)
        if (held) {
          err << "waiting request '" << w.req->id << "' holds an encoder-cache reference";
          return err.str();
        }
    if (std::string e = encoder_cache_.check_invariants(refs); !e.empty()) return e;
  }
  std::vector<const Request*> live(running_.begin(), running_.end());
  return kv_.check_invariants(live);
}

}  // namespace iris::sched
