// `iris serve`: the gRPC server. The engine runs on its own thread; gRPC's callback API
// serves every stream without a thread of its own. SIGTERM/SIGINT mark the health service
// NOT_SERVING, refuse new calls, let streams in flight finish up to --drain-timeout, stop
// the engine and exit 0. A failed engine exits 3.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <dlfcn.h>
#include <signal.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <memory>
#include <string>
#include <thread>

#include "engine/chat_template/chat_template.h"
#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/cli.h"
#include "server/engine_options.h"
#include "server/grpc/grpc_service.h"
#include "server/logging.h"
#include "server/http/http_server.h"
#include "server/http/openai_api.h"
#include "server/metrics/server_metrics.h"
#include "server/request/request_layer.h"

#ifndef IRIS_VERSION
#define IRIS_VERSION "0.1.0"
#endif

namespace iris::cli {
namespace {

struct ServeOptions {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 50051;
  std::string api_key;
  int max_queue = 256;
  int max_n = 16;
  double drain_timeout = 30.0;
  int max_message_bytes = 16 << 20;
  bool reflection = false;
  std::string tls_cert, tls_key, tls_client_ca;
  int max_images = 8;
  size_t max_image_bytes = 32u << 20;
  int max_video_frames = 768;
  int max_video_file_frames = 18'000;
  double max_video_seconds = 600;
  int image_decode_threads = 2;
  double max_constraint_compile_ms = 5000;
  uint64_t max_image_pixels = 89'478'485;
  int http_port = 8000;
  int http_threads = 2;
  size_t max_request_bytes = 32u << 20;
  size_t max_pending_output_bytes = 4u << 20;
  std::vector<std::string> allowed_media_domains;
  std::string log_format = "text";
  std::string log_level = "info";
  bool log_prompts = false;
  std::string tool_call_parser = "auto";
  std::string reasoning_parser = "none";
  EngineOptions engine;
};

std::string served_model_id(const std::string& dir) {
  std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(what, " ", path, ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const ServeOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) {
    if (!o.tls_client_ca.empty()) fail("--tls-client-ca needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert.empty() || o.tls_key.empty()) fail("TLS needs both --tls-cert and --tls-key");
  grpc::SslServerCredentialsOptions ssl(
      o.tls_client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_key_cert_pairs.push_back(
      {read_file(o.tls_key, "--tls-key"), read_file(o.tls_cert, "--tls-cert")});
  if (!o.tls_client_ca.empty()) ssl.pem_root_certs = read_file(o.tls_client_ca, "--tls-client-ca");
  return grpc::SslServerCredentials(ssl);
}

// SIGINT/SIGTERM (and SIGUSR1, which the engine thread raises when it fails) are written to
// a pipe by an async-signal-safe handler and read by the main thread. Masking the signals
// instead is not enough: libraries start threads before main (OpenBLAS's pool) that would
// take the signal's default action and kill the process.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  const int saved = errno;
  (void)!write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

void install_signal_pipe() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) fail("pipe: ", std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) sigaction(sig, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int wait_signal() {
  unsigned char b = 0;
  while (true) {
    const ssize_t n = read(g_signal_pipe[0], &b, 1);
    if (n == 1) return b;
    if (n < 0 && errno == EINTR) continue;
    fail("signal pipe: ", std::strerror(errno));
  }
}

int run_serve(ServeOptions o) {
  server::configure_logging(o.log_format, o.log_level);
  install_signal_pipe();

  if (o.model.empty()) {
    o.model = default_model_dir();
    spdlog::info("no --model: serving the embedded default model {}", o.model);
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(std::filesystem::path(o.model) / "tokenizer.json"))
    tokenizer = Tokenizer::from_dir(o.model);
  std::unique_ptr<ChatTemplate> chat_template = tokenizer ? load_chat_template(o.model) : nullptr;
  LoadedModel m = load(o.model, o.engine, [](const std::string& plan) { spdlog::info("{}", plan); });
  std::unique_ptr<Engine> engine_ptr = m.make_engine(o.engine.config(), tokenizer.get());
  Engine& engine = *engine_ptr;
  spdlog::info("{}", m.memory_report(engine.scheduler_config().num_blocks, engine.scheduler_config().block_size));

  server::ServiceOptions so;
  so.model_id = served_model_id(o.model);
  so.api_key = o.api_key;
  so.max_queue = o.max_queue;
  so.max_n = o.max_n;
  so.version = IRIS_VERSION;
  so.max_images = o.max_images;
  so.max_image_bytes = o.max_image_bytes;
  so.max_video_frames = o.max_video_frames;
  so.image_decode_threads = o.image_decode_threads;
  so.max_constraint_compile_ms = o.max_constraint_compile_ms;
  so.image_limits.max_pixels = o.max_image_pixels;
  so.image_limits.max_bytes = std::max(static_cast<size_t>(o.max_message_bytes), o.max_request_bytes);
  so.video_limits.max_pixels = o.max_image_pixels;
  so.video_limits.max_frames = o.max_video_file_frames;
  so.video_limits.max_seconds = o.max_video_seconds;
  so.video_limits.max_bytes = so.image_limits.max_bytes;
  so.max_pending_output_bytes = o.max_pending_output_bytes;
  so.log_prompts = o.log_prompts;
  so.tool_call_parser = o.tool_call_parser;
  so.reasoning_parser = o.reasoning_parser;
  // Prometheus metrics (GET /metrics on the HTTP port): the request layer records requests,
  // the engine its steps; gauges are read from the engine at scrape time.
  metrics::ServerMetricsConfig mc;
  mc.model_name = so.model_id;
  mc.version = so.version;
  mc.device = o.engine.device;
  mc.tensor_parallel_size = o.engine.tensor_parallel_size;
  mc.engine_stats = [&engine] { return engine.stats(); };
  metrics::ServerMetrics metrics(mc);
  engine.set_step_observer(&metrics);
  server::RequestLayer layer(engine, m.config, tokenizer.get(), chat_template.get(), so);
  layer.set_metrics(&metrics);
  if (chat_template)
    spdlog::info("tool-call syntax: {}; reasoning parser: {}", tools::tool_syntax_name(layer.tool_syntax()),
                 so.reasoning_parser);
  // Vision-language models: images are decoded on a small pool of threads and encoded by the
  // engine (the encoder lives on rank 0's device).
  layer.set_image_encoder(m.image_encoder.get());
  server::InferenceService service(layer);

  grpc::EnableDefaultHealthCheckService(true);
  // gRPC's reflection library registers its plugin from a static initializer as soon as it is
  // loaded, so it is not linked: it is loaded only when reflection is asked for.
  if (o.reflection && !dlopen(IRIS_GRPC_REFLECTION_LIB, RTLD_NOW | RTLD_GLOBAL))
    fail("--enable-reflection: cannot load " IRIS_GRPC_REFLECTION_LIB ": ", dlerror());
  grpc::ServerBuilder builder;
  const std::string address = o.host + ":" + std::to_string(o.port);
  int bound_port = 0;
  builder.AddListeningPort(address, server_credentials(o), &bound_port);
  builder.SetMaxReceiveMessageSize(o.max_message_bytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) fail("cannot listen on ", address);
  // The OpenAI-compatible HTTP API on its own port, over the same request layer.
  server::http::OpenAIOptions http_opts;
  http_opts.allowed_media_domains = o.allowed_media_domains;
  http_opts.max_media_fetch_bytes = o.max_image_bytes;
  server::http::OpenAIApi openai(layer, http_opts);
  openai.set_metrics([&metrics] { return metrics.render(); });
  std::unique_ptr<server::http::HttpServer> http;
  if (o.http_port != 0) {
    server::http::HttpServerOptions ho;
    ho.host = o.host;
    ho.port = o.http_port < 0 ? 0 : o.http_port;
    ho.threads = o.http_threads;
    ho.max_body_bytes = o.max_request_bytes;
    ho.tls_cert_file = o.tls_cert;
    ho.tls_key_file = o.tls_key;
    ho.tls_client_ca_file = o.tls_client_ca;
    ho.on_refused = [&layer](int status) {
      layer.rejected(server::Status(status == 400 ? server::Code::kInvalidArgument : server::Code::kTooLarge,
                                    "HTTP " + std::to_string(status) + " before routing"),
                     "http", "http");
    };
    http = std::make_unique<server::http::HttpServer>(
        ho, [&openai](server::http::HttpRequest req, std::shared_ptr<server::http::HttpExchange> ex) {
          openai.handle(std::move(req), std::move(ex));
        });
    http->start();
  }
  const pid_t self = getpid();
  engine.start([self](const std::string&) { kill(self, SIGUSR1); });
  server->GetHealthCheckService()->SetServingStatus(true);
  if (http)
    spdlog::info("http listening on {}:{} (OpenAI-compatible API{})", o.host, http->port(),
                 o.tls_cert.empty() ? "" : ", https");
  const EngineStats st = engine.stats();
  spdlog::info("serving {} on {}:{} (max context {}, {} KV blocks of {}, chat {}, auth {}, tls {}, "
               "reflection {})",
               so.model_id, o.host, bound_port, engine.max_model_len(), st.num_total_blocks,
               dtype_name(kv_storage_dtype(m.kv_cache_dtype, m.backends[0]->compute_dtype())),
               chat_template ? "on" : "off", o.api_key.empty() ? "off" : "on",
               o.tls_cert.empty() ? "off" : "on", o.reflection ? "on" : "off");

  const int sig = wait_signal();
  server->GetHealthCheckService()->SetServingStatus(false);
  if (sig == SIGUSR1) {
    spdlog::critical("the engine failed ({}); shutting down", engine.failure());
    layer.set_draining(true);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server->Wait();
    // The engine has already failed every request; let those 500s go out before closing.
    if (http) http->stop(/*grace_s=*/2.0);
    engine.stop();
    return 3;
  }
  spdlog::info("received {}, draining for up to {:.1f} s", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               o.drain_timeout);
  // Health now says NOT_SERVING and new streams get UNAVAILABLE, while the streams in flight
  // run to completion, up to the deadline. Then gRPC shuts down; whatever still runs is
  // cancelled (and its request aborted).
  layer.set_draining(true);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(o.drain_timeout * 1e3));
  while (layer.active_streams() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (layer.active_streams() > 0)
    spdlog::warn("drain timeout: cancelling {} stream(s)", layer.active_streams());
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  server->Wait();
  if (http) http->stop(/*grace_s=*/0.5);
  engine.stop();
  const std::string failed = engine.failure();
  if (!failed.empty()) {
    spdlog::critical("the engine failed during drain: {}", failed);
    return 3;
  }
  spdlog::info("stopped");
  return 0;
}

}  // namespace

Command add_serve(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand("serve", "Serve a model over gRPC (iris.v1.Inference) and the OpenAI-compatible HTTP API");
  sub->add_option("--model", opts->model,
                  "Hugging Face checkpoint directory (default: the embedded iris-tiny)");
  sub->add_option("--host", opts->host, "address to listen on")->capture_default_str();
  sub->add_option("--port", opts->port, "port to listen on (0 = any free port)")
      ->capture_default_str();
  sub->add_option("--api-key", opts->api_key,
                  "require `authorization: Bearer KEY` on every call (health exempt)");
  sub->add_option("--max-queue", opts->max_queue,
                  "sequences waiting for a batch slot at most; more get RESOURCE_EXHAUSTED "
                  "(0 = unbounded)")->capture_default_str();
  sub->add_option("--max-n", opts->max_n, "choices per request at most")->capture_default_str();
  sub->add_option("--max-constraint-compile-ms", opts->max_constraint_compile_ms,
                  "structured output: a schema, regex or grammar that takes longer to compile "
                  "is refused (0 = no cap)")->capture_default_str();
  sub->add_option("--drain-timeout,--shutdown-timeout", opts->drain_timeout,
                  "seconds to let streams finish after SIGTERM")->capture_default_str();
  sub->add_option("--max-message-bytes", opts->max_message_bytes,
                  "largest request message accepted")->capture_default_str();
  sub->add_flag("--enable-reflection", opts->reflection, "serve grpc.reflection.v1alpha");
  sub->add_option("--max-image-bytes", opts->max_image_bytes,
                  "encoded image bytes per request at most (vision models)")->capture_default_str();
  sub->add_option("--image-decode-threads", opts->image_decode_threads,
                  "threads that decode and preprocess images (vision models)")->capture_default_str();
  sub->add_option("--max-video-frames", opts->max_video_frames,
                  "frames one video may carry at most (Qwen2.5-VL; the processor samples "
                  "about 2 per second of them)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-video-file-frames", opts->max_video_file_frames,
                  "frames a video file may hold at most (Qwen2.5-VL; all are decoded to reach "
                  "the sampled ones; counted before decoding)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-video-seconds", opts->max_video_seconds,
                  "duration of a video file at most, in seconds (frames / frame rate; checked "
                  "before decoding)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-images", opts->max_images, "images per request at most (vision models)")
      ->capture_default_str();
  sub->add_option("--max-image-pixels", opts->max_image_pixels,
                  "refuse larger images, on their header, before decoding")->capture_default_str();
  sub->add_option("--tls-cert", opts->tls_cert, "PEM certificate chain (enables TLS)");
  sub->add_option("--tls-key", opts->tls_key, "PEM private key");
  sub->add_option("--tls-client-ca", opts->tls_client_ca,
                  "PEM CA bundle: require and verify client certificates (mutual TLS)");
  sub->add_option("--http-port", opts->http_port,
                  "port of the OpenAI-compatible HTTP API (0 = off, -1 = any free port)")
      ->capture_default_str();
  sub->add_option("--http-threads", opts->http_threads, "HTTP I/O threads")->capture_default_str();
  sub->add_option("--max-request-bytes", opts->max_request_bytes,
                  "largest HTTP request body accepted (413 above it)")->capture_default_str();
  sub->add_option("--max-pending-output-bytes", opts->max_pending_output_bytes,
                  "output a stream may hold unsent (a client that does not read); past it the "
                  "request is aborted")->capture_default_str();
  sub->add_option("--allowed-media-domains", opts->allowed_media_domains,
                  "hosts whose http(s) image URLs may be fetched (default: none; data: URLs only)");
  sub->add_option("--log-format", opts->log_format, "text or json (one JSON object per line)")
      ->capture_default_str();
  sub->add_option("--log-level", opts->log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str();
  sub->add_flag("--log-prompts", opts->log_prompts,
                "put each request's prompt text in its log line (off: token counts only)");
  sub->add_option("--tool-call-parser", opts->tool_call_parser,
                  "tool-call syntax of the model: auto (from its chat template, tokens and type), "
                  "llama3_json, hermes, mistral or none")
      ->check(CLI::IsMember({"auto", "llama3_json", "hermes", "mistral", "none"}))
      ->capture_default_str();
  sub->add_option("--reasoning-parser", opts->reasoning_parser,
                  "put <think>...</think> in reasoning_content: none, qwen3 (when the output opens "
                  "with <think>) or deepseek_r1 (the template opens it)")
      ->check(CLI::IsMember({"none", "qwen3", "deepseek_r1"}))
      ->capture_default_str();
  opts->engine.add_to(*sub);
  return {sub, [opts]() { return run_serve(*opts); }};
}

}  // namespace iris::cli
