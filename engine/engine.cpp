// The batching engine loop (see engine.h).
#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "engine/core/check.h"
#include "engine/sequence_constraint.h"

namespace iris {

struct Engine::Pending {
  EngineRequest request;
  std::shared_ptr<OutputCallback> on_output;
  RequestClock::clock::time_point arrival = RequestClock::clock::now();
};

struct Engine::Sequence {
  std::string request_id;
  std::string seq_id;
  int index = 0;
  SamplingParams params;
  SequenceSampler sampler;
  std::shared_ptr<OutputCallback> on_output;
  int prompt_tokens = 0;
  int generated = 0;
  RequestClock clock;  // arrival, first scheduled, first token
  std::unique_ptr<IncrementalDetokenizer> detok;  // with a tokenizer
  std::vector<MediaEmbeds> media;  // as requested: embeddings or encoder inputs
  // What the runner sees: media[i] with `embeds` pointing into the encoder cache while a
  // chunk of the step overlaps the span, null otherwise.
  std::vector<MediaEmbeds> view;
  std::unique_ptr<SequenceConstraint> constraint;  // structured output; survives preemption
  // M-RoPE models whose prompt has media: the positions of the prompt (shared by the choices).
  std::shared_ptr<const MropePositions> mrope;

  Sequence(const EngineRequest& r, int i, std::shared_ptr<OutputCallback> cb,
           const Tokenizer* tokenizer)
      : request_id(r.id), seq_id(r.id + "#" + std::to_string(i)), index(i), params(r.params),
        sampler(with_seed(r.params, i), r.prompt), on_output(std::move(cb)),
        prompt_tokens(static_cast<int>(r.prompt.size())), media(r.media), view(r.media) {
    for (MediaEmbeds& m : view) {
      m.embeds.reset();
      m.encoder_input.reset();
    }
    if (tokenizer)
      detok = std::make_unique<IncrementalDetokenizer>(*tokenizer, r.prompt, r.params.stop,
                                                       r.params.skip_special_tokens,
                                                       r.params.min_tokens);
    if (r.params.constraint) constraint = std::make_unique<SequenceConstraint>(r.params.constraint);
  }

  // Choice i of a seeded request draws from seed + i, so choices differ but each is
  // reproducible.
  static SamplingParams with_seed(SamplingParams p, int i) {
    if (p.seed) p.seed = *p.seed + static_cast<uint64_t>(i);
    return p;
  }
};

namespace {
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}
}  // namespace

Engine::Engine(Backend& backend, Model& model, const EngineConfig& config,
               const Tokenizer* tokenizer, MediaEncoder* media_encoder)
    : Engine(std::make_unique<ModelExecutor>(std::vector<RankModel>{{&backend, &model}},
                                             std::vector<std::unique_ptr<Communicator>>{}),
             config, tokenizer, media_encoder) {}

Engine::Engine(std::unique_ptr<ModelExecutor> executor, const EngineConfig& config,
               const Tokenizer* tokenizer, MediaEncoder* media_encoder)
    : executor_(std::move(executor)),
      model_config_(executor_->config()),
      tokenizer_(tokenizer),
      media_encoder_(media_encoder) {
  init(config);
}

void Engine::init(const EngineConfig& config) {
  const ModelConfig& mc = model_config_;
  sched_config_.block_size = config.block_size;
  sched_config_.max_num_seqs = config.max_num_seqs;
  sched_config_.max_num_batched_tokens = config.max_num_batched_tokens;
  sched_config_.enable_prefix_caching = config.enable_prefix_caching;
  sched_config_.policy =
      config.priority_policy ? sched::SchedulingPolicy::kPriority : sched::SchedulingPolicy::kFcfs;
  const int64_t max_len = config.max_model_len > 0
                              ? std::min<int64_t>(config.max_model_len, mc.max_position_embeddings)
                              : mc.max_position_embeddings;
  sched_config_.max_model_len = static_cast<int>(max_len);
  IRIS_CHECK(config.block_size > 0) << "--block-size must be positive";
  const int blocks_per_seq = static_cast<int>((max_len + config.block_size - 1) / config.block_size);
  int num_blocks = config.num_kv_blocks;
  if (num_blocks <= 0) {
    const size_t per_block = executor_->kv_bytes_per_block(config.block_size, config.kv_cache_dtype);
    IRIS_CHECK(config.kv_cache_memory_bytes >= 0) << "--kv-cache-memory-bytes must not be negative";
    const double budget =
        config.kv_cache_memory_bytes > 0
            ? static_cast<double>(config.kv_cache_memory_bytes)
            : static_cast<double>(executor_->free_memory_bytes()) * config.kv_memory_fraction;
    const int64_t wanted = static_cast<int64_t>(config.max_num_seqs) * blocks_per_seq + 1;
    num_blocks = static_cast<int>(std::min<int64_t>(wanted, static_cast<int64_t>(budget / per_block)));
    IRIS_CHECK(num_blocks >= 2) << "not enough memory for the KV cache (" << per_block
                                << " bytes per block)";
  }
  sched_config_.num_blocks = num_blocks;
  stats_.kv_cache_bytes =
      static_cast<int64_t>(executor_->kv_cache_bytes(num_blocks, config.block_size, config.kv_cache_dtype));
  stats_.weight_bytes = static_cast<int64_t>(executor_->weight_bytes());
  stats_.tensor_parallel_size = executor_->world_size();
  if (mc.multimodal || mc.qwen_vl) {
    sched_config_.media_in_one_chunk = mc.multimodal && mc.multimodal->gemma.has_value();
    // Qwen2.5-VL's items vary in size: the default budget is one step's tokens, and a server
    // that allows larger images raises it (an item over the budget is refused at admission).
    const int per_item = mc.multimodal ? mc.multimodal->tokens_per_image() : 1;
    sched_config_.max_num_encoder_tokens =
        config.max_num_encoder_tokens > 0 ? config.max_num_encoder_tokens
                                          : std::max(config.max_num_batched_tokens, per_item);
    sched_config_.encoder_cache_tokens =
        config.encoder_cache_tokens > 0
            ? config.encoder_cache_tokens
            : std::max(sched_config_.max_num_encoder_tokens,
                       8 * (mc.multimodal ? per_item : sched_config_.max_num_encoder_tokens));
  }
  const std::string bad = sched_config_.validate();
  if (!bad.empty()) fail("engine configuration: ", bad);
  executor_->allocate(num_blocks, config.block_size,
                      RunnerLimits{config.max_num_batched_tokens, config.max_num_seqs, blocks_per_seq,
                                   config.enforce_eager},
                      config.kv_cache_dtype);
  if (!config.host_sampling) device_sampler_ = executor_->make_device_sampler();
  scheduler_ = std::make_unique<sched::Scheduler>(sched_config_);
}

Engine::~Engine() { stop(); }

void Engine::submit(EngineRequest request, OutputCallback on_output) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!failure_.empty()) {
      EngineOutput o;
      o.id = request.id;
      o.finish_reason = FinishReason::kError;
      o.error = "the engine has failed: " + failure_;
      o.engine_failed = true;
      lock.unlock();
      on_output(o);
      return;
    }
    incoming_.push_back(
        Pending{std::move(request), std::make_shared<OutputCallback>(std::move(on_output))});
  }
  cv_.notify_one();
}

void Engine::abort(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(id);
  }
  cv_.notify_one();
}

bool Engine::has_work() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !incoming_.empty() || !aborts_.empty() || scheduler_->has_unfinished_requests();
}

void Engine::finish_sequence(Sequence& s, FinishReason reason, const std::string& error) {
  EngineOutput o;
  o.id = s.request_id;
  o.index = s.index;
  o.finish_reason = reason;
  o.error = error;
  if (s.detok && reason != FinishReason::kError) o.text = s.detok->flush();
  o.prompt_tokens = s.prompt_tokens;
  o.completion_tokens = s.generated;
  o.timing = s.clock.finish(clock_type::now());
  (*s.on_output)(o);
  auto& kids = children_[s.request_id];
  kids.erase(std::remove(kids.begin(), kids.end(), s.seq_id), kids.end());
  if (kids.empty()) children_.erase(s.request_id);
  sequences_.erase(s.seq_id);  // s is gone after this line
}

void Engine::admit_pending() {
  std::deque<Pending> incoming;
  std::vector<std::string> aborts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    incoming.swap(incoming_);
    aborts.swap(aborts_);
  }
  for (Pending& p : incoming) {
    EngineRequest& r = p.request;
    auto reject = [&](const std::string& why) {
      EngineOutput o;
      o.id = r.id;
      o.finish_reason = FinishReason::kError;
      o.error = why;
      o.prompt_tokens = static_cast<int>(r.prompt.size());
      (*p.on_output)(o);
    };
    if (children_.count(r.id)) {
      reject("a request with id '" + r.id + "' is already running");
      continue;
    }
    try {
      r.params.validate();
      check_constraint_fits(r.params, model_config_.vocab_size);
      if (!r.params.stop.empty() && !tokenizer_)
        fail("stop strings need a tokenizer, and this model has none");
      IRIS_CHECK(r.n >= 1) << "n must be at least 1, got " << r.n;
      int32_t media_end = 0;
      for (const MediaEmbeds& m : r.media) {
        IRIS_CHECK(model_config_.multimodal || model_config_.qwen_vl)
            << "this model does not take images";
        IRIS_CHECK(m.length > 0 && m.position >= media_end &&
                   static_cast<size_t>(m.position) + m.length <= r.prompt.size())
            << "media span [" << m.position << ", " << m.position + m.length
            << ") is empty, overlaps another or lies outside the prompt";
        if (m.embeds) {
          IRIS_CHECK(static_cast<int64_t>(m.embeds->size()) ==
                     static_cast<int64_t>(m.length) * model_config_.hidden_size)
              << "media span at " << m.position << " has " << m.embeds->size()
              << " embedding values, expected " << m.length << " x " << model_config_.hidden_size;
        } else {
          IRIS_CHECK(m.encoder_input) << "media span at " << m.position
                                      << " has neither embeddings nor an encoder input";
          IRIS_CHECK(media_encoder_) << "media span at " << m.position
                                     << " needs encoding, and this engine has no media encoder";
          media_encoder_->check_item(m);
        }
        if (!model_config_.mrope_section.empty()) {
          IRIS_CHECK(m.grid_t > 0 && m.grid_h > 0 && m.grid_w > 0 &&
                     static_cast<int64_t>(m.grid_t) * m.grid_h * m.grid_w == m.length)
              << "media span at " << m.position << " of " << m.length << " tokens has grid "
              << m.grid_t << "x" << m.grid_h << "x" << m.grid_w;
        }
        media_end = m.position + m.length;
      }
      for (int32_t t : r.prompt)
        if (t < 0 || t >= model_config_.vocab_size)
          fail("prompt token id ", t, " is outside the vocabulary [0, ", model_config_.vocab_size, ")");
    } catch (const Error& e) {
      reject(e.what());
      continue;
    }
    std::shared_ptr<const MropePositions> mrope;
    if (!model_config_.mrope_section.empty() && !r.media.empty()) {
      std::vector<MropeSpan> spans;
      for (const MediaEmbeds& m : r.media)
        spans.push_back(MropeSpan{m.position, m.grid_t, m.grid_h, m.grid_w, m.temporal_step});
      mrope = std::make_shared<const MropePositions>(
          mrope_positions(static_cast<int32_t>(r.prompt.size()), spans));
    }
    std::vector<std::string> admitted;
    std::string error;
    for (int i = 0; i < r.n && error.empty(); ++i) {
      auto seq = std::make_unique<Sequence>(r, i, p.on_output, tokenizer_);
      seq->mrope = mrope;
      seq->clock = RequestClock(p.arrival);
      sched::RequestSpec spec;
      spec.id = seq->seq_id;
      spec.prompt = r.prompt;
      spec.max_tokens = r.params.max_tokens;
      spec.priority = r.priority;
      spec.arrival_seq = arrival_++;
      for (const MediaEmbeds& m : r.media)
        spec.media.push_back(sched::MediaSpan{m.position, m.length, m.content_hash});
      const sched::AdmitResult a = scheduler_->add_request(std::move(spec));
      if (!a.ok()) {
        error = a.message;
        break;
      }
      admitted.push_back(seq->seq_id);
      sequences_[seq->seq_id] = std::move(seq);
    }
    if (!error.empty()) {
      for (const auto& sid : admitted) {
        scheduler_->abort(sid);
        sequences_.erase(sid);
      }
      reject(error);
      continue;
    }
    children_[r.id] = std::move(admitted);
  }
  for (const std::string& id : aborts) {
    auto it = children_.find(id);
    if (it == children_.end()) continue;
    const std::vector<std::string> kids = it->second;
    for (const auto& sid : kids) {
      scheduler_->abort(sid);
      finish_sequence(*sequences_.at(sid), FinishReason::kAbort);
    }
  }
  publish_waiting();
}

void Engine::publish_waiting() {
  const int waiting = scheduler_->num_waiting();
  std::lock_guard<std::mutex> lock(mu_);
  sched_waiting_ = waiting;
}

void Engine::refresh_stats(const StepTiming& step) {
  const sched::SchedulerStats ss = scheduler_->stats();
  std::unique_lock<std::mutex> lock(mu_);
  stats_.num_running = ss.num_running;
  stats_.num_waiting = ss.num_waiting + static_cast<int>(incoming_.size());
  sched_waiting_ = ss.num_waiting;
  stats_.num_total_blocks = ss.num_total_blocks;
  stats_.num_free_blocks = ss.num_free_blocks;
  stats_.prefix_cache_hit_rate = ss.prefix_cache_hit_rate;
  stats_.prefix_cache_query_tokens = ss.prefix_cache_query_tokens;
  stats_.num_cached_tokens_hit = ss.num_cached_tokens_hit;
  stats_.num_preemptions = ss.num_preemptions;
  stats_.num_steps = ss.num_steps;
  stats_.num_computed_tokens += step.num_tokens;
  stats_.encoder_cache = ss.encoder_cache;
  stats_.encode_seconds += step.encode_seconds;
  stats_.schedule_seconds += step.schedule_seconds;
  stats_.prepare_forward_seconds += step.forward_seconds;
  stats_.sample_seconds += step.sample_seconds;
  stats_.detokenize_seconds += step.detokenize_seconds;
  stats_.num_device_sampled = device_sampled_;
  stats_.num_graph_replays = executor_->graph_replays();
  lock.unlock();
  if (step_observer_ && step.num_seqs > 0) step_observer_->on_step(step);
}

bool Engine::step() {
  admit_pending();
  if (!scheduler_->has_unfinished_requests()) {
    refresh_stats(StepTiming{});  // aborts and rejections change block counts too
    return false;
  }
  auto t0 = clock_type::now();
  sched::SchedulerOutput out = scheduler_->schedule();
  publish_waiting();  // num_queued() is exact while the step runs (outputs go out mid-step)
  const double t_sched = seconds_since(t0);
  // The encoder follows the scheduler's cache decisions whatever else happens in the step:
  // before the requests schedule() ended are dropped (their inputs may be listed) and even
  // when nothing runs, so the engine's cache always mirrors the scheduler's account.
  const auto t_enc0 = clock_type::now();
  run_encoder(out);
  const double t_encode = seconds_since(t_enc0);
  for (const auto& f : out.finished) {
    auto it = sequences_.find(f.id);
    if (it != sequences_.end()) finish_sequence(*it->second, FinishReason::kError, f.message);
  }
  if (out.scheduled.empty()) {
    std::vector<int32_t> none;
    scheduler_->update(out, none);
    refresh_stats(StepTiming{.schedule_seconds = t_sched, .encode_seconds = t_encode});
    return true;
  }

  auto t1 = clock_type::now();
  std::vector<SeqChunk> chunks;
  chunks.reserve(out.scheduled.size());
  // Sequences with media and where their chunk ends.
  std::vector<std::pair<Sequence*, int>> with_media;
  for (const auto& s : out.scheduled) {
    Sequence& seq = *sequences_.at(std::string(s.id));
    seq.clock.scheduled(t0);
    if (!seq.view.empty()) with_media.emplace_back(&seq, s.num_computed_tokens + s.num_new_tokens);
    const int lo = s.num_computed_tokens, hi = lo + s.num_new_tokens;
    for (MediaEmbeds& m : seq.view) {
      if (m.position >= hi || m.position + m.length <= lo) continue;
      auto it = encoder_cache_.find(m.content_hash);
      IRIS_CHECK(it != encoder_cache_.end())
          << "internal: the embeddings of media span " << m.position << " of " << s.id
          << " are not in the encoder cache";
      m.embeds = it->second;
    }
    chunks.push_back(SeqChunk{s.new_token_ids.data(), s.num_new_tokens, s.num_computed_tokens,
                              s.block_table.data(), static_cast<int>(s.block_table.size()),
                              s.samples, seq.view.empty() ? nullptr : &seq.view,
                              seq.mrope.get()});
  }
  // Structured-output masks depend only on the tokens sampled so far: they are computed on the
  // mask thread while the model runs, and waited for just before sampling.
  std::vector<SequenceConstraint*> to_mask;
  for (const auto& s : out.scheduled) {
    Sequence& seq = *sequences_.at(std::string(s.id));
    if (s.samples && seq.constraint) to_mask.push_back(seq.constraint.get());
  }
  const int64_t vocab = model_config_.vocab_size;
  struct MaskJoin {  // never leaves the step with the thread still using a sequence
    BackgroundTask* task = nullptr;
    ~MaskJoin() {
      if (!task) return;
      try {
        task->wait();
      } catch (...) {  // the step is failing already; the first error is the one reported
      }
    }
  } mask_join;
  if (!to_mask.empty()) {
    if (!mask_task_) mask_task_ = std::make_unique<BackgroundTask>();
    mask_task_->start([&to_mask, vocab] {
      for (SequenceConstraint* c : to_mask) c->prepare_mask(vocab);
    });
    mask_join.task = mask_task_.get();
  }
  // With a device sampler every row is sampled on the device and no logits come to the
  // host; without one, every row is copied and sampled here.
  host_rows_.clear();
  for (const auto& s : out.scheduled)
    if (s.samples) host_rows_.push_back(!device_sampler_);
  const bool any_device_row = std::find(host_rows_.begin(), host_rows_.end(), 0) != host_rows_.end();
  const std::vector<float>& logits = executor_->run(chunks, device_sampler_ ? &host_rows_ : nullptr);
  // Spans this step completed no longer pin their embeddings (the cache decides their fate).
  for (auto& [seq, end] : with_media)
    for (MediaEmbeds& m : seq->view)
      if (m.position + m.length <= end) m.embeds.reset();
  const double t_forward = seconds_since(t1);

  auto t2 = clock_type::now();
  if (mask_join.task) {  // the masks' time beyond the forward counts as sampling time
    mask_join.task = nullptr;
    mask_task_->wait();
  }
  const auto& eos = model_config_.eos_token_ids;
  std::vector<int32_t> sampled(out.scheduled.size(), sched::Scheduler::kNoToken);
  std::vector<SequenceSampler::Result> results(out.scheduled.size());
  if (any_device_row) {
    device_rows_.clear();
    device_index_.clear();
    size_t row = 0;
    for (size_t i = 0; i < out.scheduled.size(); ++i) {
      const auto& s = out.scheduled[i];
      if (!s.samples) continue;
      const size_t r = row++;
      if (host_rows_[r]) continue;
      Sequence& seq = *sequences_.at(std::string(s.id));
      DeviceSampleRow d;
      d.logits_row = static_cast<int>(r);
      d.params = &seq.params;
      d.seed = seq.sampler.seed();
      d.offset = static_cast<uint64_t>(seq.generated);
      seq.sampler.penalty_entries(d.seen_tokens, d.seen_counts);
      d.banned = banned_tokens(seq.params, eos, seq.generated);
      d.allowed = seq.constraint ? seq.constraint->next_mask(vocab) : nullptr;
      device_rows_.push_back(std::move(d));
      device_index_.push_back(i);
    }
    std::vector<int32_t> tokens(device_rows_.size());
    std::vector<float> logprobs(device_rows_.size());
    std::vector<std::vector<std::pair<int32_t, float>>> top(device_rows_.size());
    device_sampler_->sample(executor_->device_logits(), device_rows_, tokens.data(), logprobs.data(),
                            top.data());
    for (size_t k = 0; k < device_index_.size(); ++k) {
      SequenceSampler::Result& res = results[device_index_[k]];
      res.token = tokens[k];
      res.logprob = logprobs[k];
      res.top = std::move(top[k]);
      sampled[device_index_[k]] = tokens[k];
    }
    device_sampled_ += device_rows_.size();
  }
  size_t row = 0;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    const auto& s = out.scheduled[i];
    if (!s.samples) continue;
    const size_t r = row++;
    if (!host_rows_[r]) continue;
    const float* l = logits.data() + r * vocab;
    Sequence& seq = *sequences_.at(std::string(s.id));
    results[i] = seq.sampler.sample(l, vocab, banned_tokens(seq.params, eos, seq.generated),
                                    seq.constraint ? seq.constraint->next_mask(vocab) : nullptr);
    sampled[i] = results[i].token;
  }
  std::vector<std::string> ids;
  ids.reserve(out.scheduled.size());
  for (const auto& s : out.scheduled) ids.emplace_back(s.id);
  const sched::UpdateOutput upd = scheduler_->update(out, sampled);
  std::vector<std::string> length_done;
  for (const auto& f : upd.finished) length_done.push_back(f.id);
  const auto t3 = clock_type::now();  // tokens of this step exist from here

  int64_t computed = 0;
  for (size_t i = 0; i < out.scheduled.size(); ++i) {
    computed += out.scheduled[i].num_new_tokens;
    if (sampled[i] == sched::Scheduler::kNoToken) continue;
    auto it = sequences_.find(ids[i]);
    if (it == sequences_.end()) continue;
    Sequence& seq = *it->second;
    seq.sampler.append(sampled[i]);
    ++seq.generated;
    seq.clock.token(t3);
    EngineOutput o;
    o.id = seq.request_id;
    o.index = seq.index;
    o.token_ids = {sampled[i]};
    o.logprobs = {results[i].logprob};
    if (seq.params.top_logprobs > 0) o.top_logprobs = {std::move(results[i].top)};
    o.prompt_tokens = seq.prompt_tokens;
    o.completion_tokens = seq.generated;
    const bool by_scheduler =
        std::find(length_done.begin(), length_done.end(), ids[i]) != length_done.end();
    auto stop = check_token_stop(seq.params, eos, sampled[i], seq.generated,
                                 seq.prompt_tokens + seq.generated, sched_config_.max_model_len);
    if (seq.detok) {
      // The detokenizer applies min_tokens to stop strings itself (see tokenizer.h).
      IncrementalDetokenizer::Delta d = seq.detok->push(sampled[i]);
      o.text = std::move(d.text);
      if (d.stopped) stop = FinishReason::kStop;
    }
    // A complete constrained output ends with "stop" (even on its max_tokens-th token).
    if (seq.constraint && (!stop || *stop == FinishReason::kLength))
      if (auto c = seq.constraint->advance(sampled[i])) {
        stop = c;
        if (*c == FinishReason::kError) o.error = seq.constraint->error();
        // Text held back as a possible stop-string start is part of the output.
        else if (seq.detok) o.text += seq.detok->flush();
      }
    if (by_scheduler && !stop) stop = FinishReason::kLength;
    if (stop) o.timing = seq.clock.finish(clock_type::now());  // the choice's last output
    if (!stop) {
      (*seq.on_output)(o);
      continue;
    }
    if (!by_scheduler) scheduler_->finish(ids[i], *stop == FinishReason::kStop
                                                      ? sched::FinishReason::kStop
                                                      : sched::FinishReason::kLength);
    o.finish_reason = *stop;
    // Whatever ended the sequence (EOS, a stop id, length), text still held back as a possible
    // stop-string start or an unfinished character belongs to the answer; after a stop-string
    // match flush() has nothing left.
    if (seq.detok) o.text += seq.detok->flush();
    (*seq.on_output)(o);
    auto& kids = children_[seq.request_id];
    kids.erase(std::remove(kids.begin(), kids.end(), seq.seq_id), kids.end());
    if (kids.empty()) children_.erase(seq.request_id);
    sequences_.erase(it);
  }
  refresh_stats(StepTiming{.schedule_seconds = t_sched,
                           .encode_seconds = t_encode,
                           .forward_seconds = t_forward,
                           .sample_seconds = std::chrono::duration<double>(t3 - t2).count(),
                           .detokenize_seconds = seconds_since(t3),
                           .num_tokens = static_cast<int>(computed),
                           .num_seqs = static_cast<int>(out.scheduled.size()),
                           .num_encoder_inputs = static_cast<int>(out.encoder_inputs.size())});
  return true;
}

void Engine::run_encoder(const sched::SchedulerOutput& out) {
  for (uint64_t h : out.encoder_evicted) encoder_cache_.erase(h);
  if (out.encoder_inputs.empty()) return;
  std::vector<const MediaEmbeds*> inputs;
  std::vector<uint64_t> hashes;
  for (const sched::EncoderInput& e : out.encoder_inputs) {
    const Sequence& seq = *sequences_.at(std::string(e.id));
    const MediaEmbeds& m = seq.media.at(static_cast<size_t>(e.media_index));
    if (m.embeds) {
      encoder_cache_[e.content_hash] = m.embeds;  // given with the request
    } else {
      inputs.push_back(&m);
      hashes.push_back(e.content_hash);
    }
  }
  if (inputs.empty()) return;
  IRIS_CHECK(media_encoder_) << "internal: media to encode and no media encoder";
  std::vector<std::shared_ptr<const std::vector<float>>> embeds = media_encoder_->encode_items(inputs);
  IRIS_CHECK(embeds.size() == inputs.size()) << "the media encoder returned " << embeds.size()
                                             << " results for " << inputs.size() << " inputs";
  for (size_t i = 0; i < embeds.size(); ++i) encoder_cache_[hashes[i]] = std::move(embeds[i]);
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  if (s.num_total_blocks == 0) {
    s.num_total_blocks = sched_config_.num_usable_blocks();
    s.num_free_blocks = s.num_total_blocks;
  }
  return s;
}

std::string Engine::check_invariants() const { return scheduler_->check_invariants(); }

int Engine::num_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sched_waiting_ + static_cast<int>(incoming_.size());
}

std::string Engine::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void Engine::fail_all(const std::string& why) {
  std::deque<Pending> incoming;
  {
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = why.empty() ? "unknown error" : why;
    incoming.swap(incoming_);
    aborts_.clear();
  }
  const std::string msg = "the engine has failed: " + failure_;
  for (auto& p : incoming) {
    EngineOutput o;
    o.id = p.request.id;
    o.finish_reason = FinishReason::kError;
    o.error = msg;
    o.engine_failed = true;
    (*p.on_output)(o);
  }
  std::vector<std::string> ids;
  for (const auto& [id, seq] : sequences_) ids.push_back(id);
  for (const auto& id : ids) {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) continue;
    EngineOutput o;
    o.id = it->second->request_id;
    o.index = it->second->index;
    o.finish_reason = FinishReason::kError;
    o.error = msg;
    o.engine_failed = true;
    o.prompt_tokens = it->second->prompt_tokens;
    o.completion_tokens = it->second->generated;
    o.timing = it->second->clock.finish(clock_type::now());
    (*it->second->on_output)(o);
    sequences_.erase(it);
  }
  children_.clear();
}

void Engine::start(std::function<void(const std::string&)> on_failure) {
  stop_ = false;
  thread_ = std::thread([this, on_failure = std::move(on_failure)] {
    while (!stop_) {
      bool worked = false;
      try {
        worked = step();
      } catch (const std::exception& e) {
        spdlog::critical("engine step failed: {}", e.what());
        fail_all(e.what());
        if (on_failure) on_failure(e.what());
        return;
      }
      if (!worked) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(50),
                     [this] { return stop_ || !incoming_.empty() || !aborts_.empty(); });
      }
    }
  });
}

void Engine::stop() {
  stop_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace iris
