// `iris serve`: the gRPC server. The engine runs on its own thread; gRPC's callback API
// serves every stream without a thread of its own. SIGTERM/SIGINT mark the health service
// NOT_SERVING, shut the server down with a deadline, stop the engine and exit 0.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/cli.h"
#include "server/engine_options.h"
#include "server/grpc_service.h"

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
  int max_queue = 0;
  double shutdown_timeout = 5.0;
  EngineOptions engine;
};

std::string served_model_id(const std::string& dir) {
  std::filesystem::path p = std::filesystem::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

int run_serve(const ServeOptions& o) {
  // Every thread started from here on (engine, gRPC) inherits this mask, so only the
  // sigwait below sees SIGINT/SIGTERM.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<Tokenizer> tokenizer;
  if (std::filesystem::exists(std::filesystem::path(o.model) / "tokenizer.json"))
    tokenizer = Tokenizer::from_dir(o.model);
  LoadedModel m = load(o.model, o.engine);
  Engine engine(*m.backend, *m.model, o.engine.config(), tokenizer.get());

  server::ServiceOptions so;
  so.model_id = served_model_id(o.model);
  so.api_key = o.api_key;
  so.max_queue = o.max_queue;
  so.version = IRIS_VERSION;
  server::InferenceService service(engine, m.config, tokenizer.get(), so);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  const std::string address = o.host + ":" + std::to_string(o.port);
  int bound_port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) fail("cannot listen on ", address);
  engine.start();
  server->GetHealthCheckService()->SetServingStatus(true);
  const EngineStats st = engine.stats();
  spdlog::info("serving {} on {}:{} (max context {}, {} KV blocks, auth {})", so.model_id, o.host,
               bound_port, engine.max_model_len(), st.num_total_blocks,
               o.api_key.empty() ? "off" : "on");

  int sig = 0;
  sigwait(&signals, &sig);
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  server->GetHealthCheckService()->SetServingStatus(false);
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout * 1e3));
  server->Shutdown(deadline);
  server->Wait();
  engine.stop();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

Command add_serve(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand("serve", "Serve a model over gRPC (iris.v1.Inference)");
  sub->add_option("--model", opts->model, "Hugging Face checkpoint directory")->required();
  sub->add_option("--host", opts->host, "address to listen on")->capture_default_str();
  sub->add_option("--port", opts->port, "port to listen on (0 = any free port)")
      ->capture_default_str();
  sub->add_option("--api-key", opts->api_key,
                  "require `authorization: Bearer KEY` on every call (health exempt)");
  sub->add_option("--max-queue", opts->max_queue,
                  "Generate streams in flight at most (0 = unlimited)")->capture_default_str();
  sub->add_option("--shutdown-timeout", opts->shutdown_timeout,
                  "seconds to let streams finish on SIGTERM")->capture_default_str();
  opts->engine.add_to(*sub);
  return {sub, [opts]() { return run_serve(*opts); }};
}

}  // namespace iris::cli
