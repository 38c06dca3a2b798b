// The OpenAI-compatible HTTP API (and vLLM's extras) over the request layer:
//   POST /v1/chat/completions, POST /v1/completions, GET /v1/models[/{id}],
//   POST /tokenize, POST /detokenize, GET /health, GET /version, GET /metrics.
// Requests and responses are shaped as OpenAI documents them; errors are
// {"error": {"message", "type", "param", "code"}} with the HTTP status of the failure.
// This file only translates JSON to a GenerationInput and EngineOutputs to JSON/SSE; every rule
// of a request lives in server/request.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/http/http_server.h"
#include "server/request/request_layer.h"

namespace iris::server::http {

struct OpenAIOptions {
  // Hosts whose http(s) image URLs may be fetched; any other URL host is refused before a
  // connection is made. Empty = only data: URLs.
  std::vector<std::string> allowed_media_domains;
  size_t max_media_fetch_bytes = 32u << 20;
  double media_fetch_timeout_s = 10;
  int media_fetch_threads = 2;
};

class OpenAIApi {
 public:
  OpenAIApi(RequestLayer& layer, OpenAIOptions options);
  ~OpenAIApi();

  // The HttpServer handler.
  void handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange);
  // The body of GET /metrics (Prometheus text format); unset = 404.
  void set_metrics(std::function<std::string()> render) { metrics_ = std::move(render); }

 private:
  struct Call;
  class Generation;
  void chat_completions(Call& call);
  void completions(Call& call);
  void tokenize(Call& call);
  void detokenize(Call& call);
  void models(Call& call, const std::string& id);
  // Fetches the remote images of `in` (allowed hosts only) on the fetch pool, then runs `next`
  // there; with none, runs `next` now.
  void with_remote_images(std::vector<std::pair<ImageInput*, std::string>> urls,
                          std::shared_ptr<HttpExchange> exchange, std::function<void()> next);

  RequestLayer& layer_;
  OpenAIOptions options_;
  std::function<std::string()> metrics_;
  long long created_;  // unix seconds at start, for /v1/models
  std::unique_ptr<DecodePool> fetch_pool_;
};

}  // namespace iris::server::http
