// The server's metric set (see server_metrics.h and docs/observability.md).
#include "server/metrics/server_metrics.h"

#include <unistd.h>

#include <fstream>

namespace iris::metrics {

const char* api_name(Api api) {
  switch (api) {
    case Api::kGrpc: return "grpc";
    case Api::kHttp: return "http";
  }
  return "?";
}

const char* reject_reason_name(RejectReason reason) {
  switch (reason) {
    case RejectReason::kInvalidArgument: return "invalid_argument";
    case RejectReason::kUnauthenticated: return "unauthenticated";
    case RejectReason::kQueueFull: return "queue_full";
    case RejectReason::kTooLarge: return "too_large";
    case RejectReason::kDraining: return "draining";
    case RejectReason::kNotFound: return "not_found";
  }
  return "?";
}

namespace {
static_assert(static_cast<int>(FinishReason::kError) == kNumFinishReasons - 1,
              "a new FinishReason needs its iris_request_success_total series");
int index_of(FinishReason r) {
  const int i = static_cast<int>(r);
  return i >= 0 && i < kNumFinishReasons ? i : static_cast<int>(FinishReason::kError);
}
}  // namespace

int64_t ServerMetrics::process_resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0, resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  const long page = sysconf(_SC_PAGESIZE);
  return resident_pages * (page > 0 ? page : 4096);
}

ServerMetrics::ServerMetrics(ServerMetricsConfig config) : config_(std::move(config)) {
  Registry& r = registry_;
  const std::string& model = config_.model_name;
  const std::vector<std::string> m{"model_name"};
  auto gauge = [&](const char* name, const char* help) { return &r.gauge(name, help, m).with({model}); };
  auto counter = [&](const char* name, const char* help) {
    return &r.counter(name, help, m).with({model});
  };
  auto histogram = [&](const char* name, const char* help, const std::vector<double>& bounds) {
    return &r.histogram(name, help, m, bounds).with({model});
  };

  // Scheduler state (vLLM names).
  num_requests_running_ = gauge("iris_num_requests_running",
                                "Sequences in the engine's running batch (a request with n choices counts n).");
  num_requests_waiting_ = gauge("iris_num_requests_waiting",
                                "Sequences waiting to be scheduled, including submissions the scheduler has not seen yet.");
  kv_cache_usage_perc_ = gauge("iris_kv_cache_usage_perc",
                               "Fraction of KV-cache blocks in use, 0 to 1 (cached but unreferenced blocks count as free).");
  prefix_cache_queries_ = counter("iris_prefix_cache_queries",
                                  "Prompt tokens looked up in the prefix cache at admission.");
  prefix_cache_hits_ = counter("iris_prefix_cache_hits",
                               "Prompt tokens found in the prefix cache at admission (not recomputed).");
  num_preemptions_ = counter("iris_num_preemptions",
                             "Sequences preempted for lack of KV blocks (recomputed later).");

  // Tokens and requests.
  prompt_tokens_ = counter("iris_prompt_tokens", "Prompt tokens of finished requests (each choice counts its prompt).");
  generation_tokens_ = counter("iris_generation_tokens", "Tokens generated and streamed to clients.");
  auto& success = r.counter("iris_request_success",
                            "Finished requests (choices), by finish reason (stop, length, abort, error) and front door.",
                            {"model_name", "finished_reason", "api"});
  for (int f = 0; f < kNumFinishReasons; ++f)
    for (int a = 0; a < kNumApis; ++a)
      request_success_[f][a] = &success.with(
          {model, finish_reason_name(static_cast<FinishReason>(f)), api_name(static_cast<Api>(a))});
  auto& rejected = r.counter("iris_request_rejected",
                             "Requests refused before generation, by reason and front door.",
                             {"model_name", "reason", "api"});
  for (int k = 0; k < kNumRejectReasons; ++k)
    for (int a = 0; a < kNumApis; ++a)
      request_rejected_[k][a] = &rejected.with(
          {model, reject_reason_name(static_cast<RejectReason>(k)), api_name(static_cast<Api>(a))});

  // Request latencies.
  const auto& lat = buckets::request_latency_seconds();
  ttft_ = histogram("iris_time_to_first_token_seconds",
                    "Time from arrival at the front door to the first generated token.", lat);
  itl_ = histogram("iris_inter_token_latency_seconds",
                   "Time between consecutive generated tokens of a choice, per token.",
                   buckets::inter_token_latency_seconds());
  e2e_ = histogram("iris_e2e_request_latency_seconds",
                   "Time from arrival at the front door to the final output of a choice.", lat);
  queue_time_ = histogram("iris_request_queue_time_seconds",
                          "Time from engine submission to the first step that scheduled the request.", lat);
  preprocess_time_ = histogram("iris_request_preprocess_time_seconds",
                               "Time from arrival at the front door to engine submission (validation, chat template, tokenization, image decode).",
                               lat);
  prefill_time_ = histogram("iris_request_prefill_time_seconds",
                            "Time from first scheduled to the first generated token.", lat);
  decode_time_ = histogram("iris_request_decode_time_seconds",
                           "Time from the first generated token to the final output.", lat);
  inference_time_ = histogram("iris_request_inference_time_seconds",
                              "Time from first scheduled to the final output (prefill + decode).", lat);
  request_prompt_tokens_ = histogram("iris_request_prompt_tokens", "Prompt tokens per finished request.",
                                     buckets::request_tokens());
  request_generation_tokens_ = histogram("iris_request_generation_tokens",
                                         "Generated tokens per finished request.", buckets::request_tokens());

  // Engine steps.
  engine_steps_ = counter("iris_engine_steps", "Engine steps run (scheduling rounds, with or without model work).");
  iteration_tokens_ = histogram("iris_iteration_tokens",
                                "Tokens fed to the model per engine step (prefill chunks plus decodes).",
                                buckets::iteration_tokens());
  auto& phase = r.histogram("iris_step_phase_seconds",
                            "Time per phase of an engine step that ran the model: schedule, forward (inputs, all ranks, logits to host), sample (sampling and scheduler update), detokenize (detokenization, stop checks, output callbacks).",
                            {"model_name", "phase"}, buckets::step_phase_seconds());
  step_schedule_ = &phase.with({model, "schedule"});
  step_forward_ = &phase.with({model, "forward"});
  step_sample_ = &phase.with({model, "sample"});
  step_detokenize_ = &phase.with({model, "detokenize"});

  // Images (vision-language models).
  const auto& img = buckets::image_seconds();
  image_decode_ = histogram("iris_image_decode_seconds", "Time to decode one image (JPEG/PNG to RGB).", img);
  image_preprocess_ = histogram("iris_image_preprocess_seconds",
                                "Time to resize, normalize and patchify one decoded image.", img);
  image_encode_ = histogram("iris_image_encode_seconds",
                            "Time the engine step spent in the vision encoder, per step that encoded images.", img);
  encoder_cache_queries_ = counter("iris_encoder_cache_queries",
                                   "Image spans whose embeddings a prefill chunk needed.");
  encoder_cache_hits_ = counter("iris_encoder_cache_hits",
                                "Image spans found in the encoder cache (not encoded again).");
  images_encoded_ = counter("iris_images_encoded", "Images run through the vision encoder.");

  // Memory and build.
  resident_memory_bytes_ = gauge("iris_process_resident_memory_bytes",
                                 "Resident set size of the server process (from /proc/self/statm).");
  kv_cache_bytes_ = gauge("iris_kv_cache_bytes", "Device memory held by the KV cache, summed over tensor-parallel ranks.");
  weight_bytes_ = gauge("iris_model_weight_bytes",
                        "Device memory held by the language model's weights, summed over tensor-parallel ranks.");
  r.gauge("iris_build_info", "Always 1; the labels describe the build and the deployment.",
          {"model_name", "version", "device", "tp_size"})
      .with({model, config_.version, config_.device, std::to_string(config_.tensor_parallel_size)})
      .set(1);
}

void ServerMetrics::on_request_finished(const RequestRecord& r) {
  request_success_[index_of(r.finish_reason)][static_cast<int>(r.api) & 1]->inc();
  prompt_tokens_->inc(r.prompt_tokens);
  request_prompt_tokens_->observe(r.prompt_tokens);
  request_generation_tokens_->observe(r.completion_tokens);
  preprocess_time_->observe(r.preprocess_seconds);
  if (!r.timing) {
    e2e_->observe(r.preprocess_seconds);
    return;
  }
  const RequestTiming& t = *r.timing;
  e2e_->observe(r.preprocess_seconds + t.e2e_seconds);
  if (t.scheduled) {
    queue_time_->observe(t.queue_seconds);
    inference_time_->observe(t.prefill_seconds + t.decode_seconds);
  }
  if (t.first_token) {
    ttft_->observe(r.preprocess_seconds + t.ttft_seconds);
    prefill_time_->observe(t.prefill_seconds);
    decode_time_->observe(t.decode_seconds);
  }
}

void ServerMetrics::on_tokens(int num_tokens, std::optional<double> since_previous) {
  if (num_tokens <= 0) return;
  generation_tokens_->inc(num_tokens);
  if (since_previous) itl_->observe(*since_previous / num_tokens, static_cast<uint64_t>(num_tokens));
}

void ServerMetrics::on_rejected(RejectReason reason, Api api) {
  const int k = static_cast<int>(reason);
  if (k < 0 || k >= kNumRejectReasons) return;
  request_rejected_[k][static_cast<int>(api) & 1]->inc();
}

void ServerMetrics::on_image_prepared(double decode_seconds, double preprocess_seconds) {
  image_decode_->observe(decode_seconds);
  image_preprocess_->observe(preprocess_seconds);
}

void ServerMetrics::on_step(const StepTiming& step) noexcept {
  iteration_tokens_->observe(step.num_tokens);
  step_schedule_->observe(step.schedule_seconds);
  step_forward_->observe(step.forward_seconds);
  step_sample_->observe(step.sample_seconds);
  step_detokenize_->observe(step.detokenize_seconds);
  if (step.num_encoder_inputs > 0) image_encode_->observe(step.encode_seconds);
}

std::string ServerMetrics::render() {
  std::lock_guard<std::mutex> lock(render_mu_);
  if (config_.engine_stats) {
    const EngineStats s = config_.engine_stats();
    num_requests_running_->set(s.num_running);
    num_requests_waiting_->set(s.num_waiting);
    kv_cache_usage_perc_->set(
        s.num_total_blocks > 0
            ? 1.0 - static_cast<double>(s.num_free_blocks) / static_cast<double>(s.num_total_blocks)
            : 0.0);
    prefix_cache_queries_->set_total(static_cast<double>(s.prefix_cache_query_tokens));
    prefix_cache_hits_->set_total(static_cast<double>(s.num_cached_tokens_hit));
    num_preemptions_->set_total(static_cast<double>(s.num_preemptions));
    engine_steps_->set_total(static_cast<double>(s.num_steps));
    encoder_cache_queries_->set_total(static_cast<double>(s.encoder_cache.queries));
    encoder_cache_hits_->set_total(static_cast<double>(s.encoder_cache.hits));
    images_encoded_->set_total(static_cast<double>(s.encoder_cache.encoded_items));
    kv_cache_bytes_->set(static_cast<double>(s.kv_cache_bytes));
    weight_bytes_->set(static_cast<double>(s.weight_bytes));
  }
  resident_memory_bytes_->set(static_cast<double>(process_resident_memory_bytes()));
  return registry_.render();
}

}  // namespace iris::metrics
