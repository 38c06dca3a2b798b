// ServerMetrics: what the request layer records shows up under the documented names and
// labels, engine gauges are read at render time, and the whole exposition passes Prometheus'
// own `promtool check metrics` (format and naming lint) with nothing to report.
#include <catch2/catch.hpp>

#include <string>

#include "server/metrics/server_metrics.h"
#include "tests/metrics/promtool.h"

using namespace iris;
using namespace iris::metrics;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

RequestRecord record(Api api, FinishReason reason, int prompt, int completion, double queue,
                     double prefill, double decode) {
  RequestRecord r;
  r.api = api;
  r.finish_reason = reason;
  r.prompt_tokens = prompt;
  r.completion_tokens = completion;
  r.preprocess_seconds = 0.002;
  RequestTiming t;
  t.scheduled = true;
  t.first_token = completion > 0;
  t.queue_seconds = queue;
  t.prefill_seconds = prefill;
  t.decode_seconds = decode;
  t.ttft_seconds = queue + prefill;
  t.e2e_seconds = queue + prefill + decode;
  r.timing = t;
  return r;
}

// A metric set with a few requests of every kind recorded, and engine stats to read.
struct Recorded {
  EngineStats stats;
  ServerMetrics metrics;
  explicit Recorded(const std::string& model_name)
      : metrics(ServerMetricsConfig{model_name, "0.1.0", "cuda", 2, [this] { return stats; }}) {
    stats.num_running = 3;
    stats.num_waiting = 5;
    stats.num_total_blocks = 200;
    stats.num_free_blocks = 150;
    stats.prefix_cache_query_tokens = 1000;
    stats.num_cached_tokens_hit = 640;
    stats.num_preemptions = 2;
    stats.num_steps = 77;
    stats.encoder_cache.queries = 4;
    stats.encoder_cache.hits = 1;
    stats.encoder_cache.encoded_items = 3;
    stats.kv_cache_bytes = 1 << 30;
    stats.weight_bytes = 3 << 20;

    metrics.on_request_finished(record(Api::kHttp, FinishReason::kStop, 100, 20, 0.01, 0.05, 0.5));
    metrics.on_request_finished(record(Api::kHttp, FinishReason::kStop, 12, 3, 0.001, 0.02, 0.04));
    metrics.on_request_finished(record(Api::kGrpc, FinishReason::kLength, 7, 16, 0.3, 0.1, 2.0));
    metrics.on_request_finished(record(Api::kGrpc, FinishReason::kAbort, 50, 0, 0.2, 0.1, 0));
    RequestRecord refused;  // refused at engine admission: no timing
    refused.api = Api::kGrpc;
    refused.finish_reason = FinishReason::kError;
    refused.prompt_tokens = 9;
    metrics.on_request_finished(refused);
    metrics.on_tokens(1, std::nullopt);
    metrics.on_tokens(1, 0.02);
    metrics.on_tokens(2, 0.05);  // two tokens in one output: two gaps of 0.025
    metrics.on_rejected(RejectReason::kQueueFull, Api::kHttp);
    metrics.on_rejected(RejectReason::kQueueFull, Api::kHttp);
    metrics.on_rejected(RejectReason::kUnauthenticated, Api::kGrpc);
    metrics.on_image_prepared(0.004, 0.012);
    StepTiming step;
    step.schedule_seconds = 3e-5;
    step.forward_seconds = 0.02;
    step.sample_seconds = 4e-4;
    step.detokenize_seconds = 1e-4;
    step.encode_seconds = 0.03;
    step.num_tokens = 96;
    step.num_seqs = 4;
    step.num_encoder_inputs = 1;
    metrics.on_step(step);
    step.num_encoder_inputs = 0;  // no image: no encode observation
    step.num_tokens = 4;
    metrics.on_step(step);
  }
};

}  // namespace

TEST_CASE("ServerMetrics exposes what was recorded under the documented names") {
  Recorded rec("llama-3-8b");
  const std::string text = rec.metrics.render();
  INFO(text);
  const std::string m = "model_name=\"llama-3-8b\"";
  CHECK(has_line(text, "iris_num_requests_running{" + m + "} 3"));
  CHECK(has_line(text, "iris_num_requests_waiting{" + m + "} 5"));
  CHECK(has_line(text, "iris_kv_cache_usage_perc{" + m + "} 0.25"));
  CHECK(has_line(text, "iris_prefix_cache_queries_total{" + m + "} 1000"));
  CHECK(has_line(text, "iris_prefix_cache_hits_total{" + m + "} 640"));
  CHECK(has_line(text, "iris_num_preemptions_total{" + m + "} 2"));
  CHECK(has_line(text, "iris_engine_steps_total{" + m + "} 77"));
  CHECK(has_line(text, "iris_prompt_tokens_total{" + m + "} 178"));
  CHECK(has_line(text, "iris_generation_tokens_total{" + m + "} 4"));
  CHECK(has_line(text, "iris_request_success_total{" + m + ",finished_reason=\"stop\",api=\"http\"} 2"));
  CHECK(has_line(text, "iris_request_success_total{" + m + ",finished_reason=\"length\",api=\"grpc\"} 1"));
  CHECK(has_line(text, "iris_request_success_total{" + m + ",finished_reason=\"abort\",api=\"grpc\"} 1"));
  CHECK(has_line(text, "iris_request_success_total{" + m + ",finished_reason=\"error\",api=\"grpc\"} 1"));
  CHECK(has_line(text, "iris_request_success_total{" + m + ",finished_reason=\"stop\",api=\"grpc\"} 0"));
  CHECK(has_line(text, "iris_request_rejected_total{" + m + ",reason=\"queue_full\",api=\"http\"} 2"));
  CHECK(has_line(text, "iris_request_rejected_total{" + m + ",reason=\"unauthenticated\",api=\"grpc\"} 1"));
  CHECK(has_line(text, "iris_request_rejected_total{" + m + ",reason=\"draining\",api=\"http\"} 0"));
  // Every request has an e2e latency; only those with a token have TTFT and decode time;
  // only those scheduled have a queue time.
  CHECK(has_line(text, "iris_e2e_request_latency_seconds_count{" + m + "} 5"));
  CHECK(has_line(text, "iris_time_to_first_token_seconds_count{" + m + "} 3"));
  CHECK(has_line(text, "iris_request_decode_time_seconds_count{" + m + "} 3"));
  CHECK(has_line(text, "iris_request_queue_time_seconds_count{" + m + "} 4"));
  CHECK(has_line(text, "iris_request_prompt_tokens_count{" + m + "} 5"));
  CHECK(has_line(text, "iris_request_generation_tokens_sum{" + m + "} 39"));
  // TTFT runs from the front door: queue + prefill + preprocess (0.062 for the first).
  CHECK(has_line(text, "iris_time_to_first_token_seconds_bucket{" + m + ",le=\"0.075\"} 2"));
  CHECK(has_line(text, "iris_inter_token_latency_seconds_count{" + m + "} 3"));
  CHECK(has_line(text, "iris_inter_token_latency_seconds_bucket{" + m + ",le=\"0.02\"} 1"));
  CHECK(has_line(text, "iris_inter_token_latency_seconds_bucket{" + m + ",le=\"0.025\"} 3"));
  CHECK(has_line(text, "iris_iteration_tokens_count{" + m + "} 2"));
  CHECK(has_line(text, "iris_iteration_tokens_sum{" + m + "} 100"));
  CHECK(has_line(text, "iris_step_phase_seconds_count{" + m + ",phase=\"forward\"} 2"));
  CHECK(has_line(text, "iris_step_phase_seconds_count{" + m + ",phase=\"detokenize\"} 2"));
  CHECK(has_line(text, "iris_image_encode_seconds_count{" + m + "} 1"));
  CHECK(has_line(text, "iris_image_decode_seconds_count{" + m + "} 1"));
  CHECK(has_line(text, "iris_encoder_cache_queries_total{" + m + "} 4"));
  CHECK(has_line(text, "iris_encoder_cache_hits_total{" + m + "} 1"));
  CHECK(has_line(text, "iris_images_encoded_total{" + m + "} 3"));
  CHECK(has_line(text, "iris_kv_cache_bytes{" + m + "} 1073741824"));
  CHECK(has_line(text, "iris_model_weight_bytes{" + m + "} 3145728"));
  CHECK(has_line(text, "iris_build_info{" + m + ",version=\"0.1.0\",device=\"cuda\",tp_size=\"2\"} 1"));
  CHECK(text.find("\niris_process_resident_memory_bytes{" + m + "} ") != std::string::npos);
  CHECK(ServerMetrics::process_resident_memory_bytes() > 0);

  // Engine gauges follow the stats source at every render.
  rec.stats.num_running = 0;
  rec.stats.num_free_blocks = 200;
  const std::string again = rec.metrics.render();
  CHECK(has_line(again, "iris_num_requests_running{" + m + "} 0"));
  CHECK(has_line(again, "iris_kv_cache_usage_perc{" + m + "} 0"));
}

TEST_CASE("every sample name carries the iris_ prefix and a model_name label") {
  Recorded rec("m");
  const std::string text = rec.metrics.render();
  size_t pos = 0, samples = 0;
  while (pos < text.size()) {
    const size_t end = text.find('\n', pos);
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    ++samples;
    INFO(line);
    CHECK(line.rfind("iris_", 0) == 0);
    CHECK(line.find("{model_name=\"m\"") != std::string::npos);
  }
  CHECK(samples > 100);
}

TEST_CASE("a ServerMetrics exposition passes promtool check metrics") {
  const std::string promtool = iris::test::promtool_path();
  if (promtool.empty())
    FAIL("promtool not found at configure time: install Debian's prometheus package "
         "(scripts/install-deps.sh) and reconfigure");
  // A model name that needs escaping, to check the escaping with Prometheus' own parser.
  Recorded rec("org/model \"v2\" \\ 8b\nx");
  const std::string text = rec.metrics.render();
  const iris::test::PromtoolResult r = iris::test::promtool_check_metrics(text);
  INFO("promtool output:\n" << r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.empty());

  // The check is not vacuous: promtool does flag a bad exposition.
  const auto bad = iris::test::promtool_check_metrics(
      "# HELP x_seconds_total x\n# TYPE x_seconds_total gauge\nx_seconds_total 1\n");
  CHECK(!bad.output.empty());
}
