// The gRPC `iris.v1.Inference` service over a running Engine (callback API: no thread per
// stream). Generate streams each EngineOutput as a GenerateResponse; engine callbacks arrive
// on the engine thread and are queued onto the stream, one StartWrite outstanding at a time.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "engine/engine.h"
#include "engine/loader/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "iris/v1/inference.grpc.pb.h"

namespace iris::server {

struct ServiceOptions {
  std::string model_id;  // the served model's name (its directory's basename)
  std::string api_key;   // empty = no authentication
  int max_queue = 0;     // Generate streams in flight at most (0 = unlimited)
  std::string version;
};

// Constant-time check of `authorization: Bearer <key>` against `key`.
bool bearer_matches(const std::string& authorization, const std::string& key);

class InferenceService final : public iris::v1::Inference::CallbackService {
 public:
  InferenceService(Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer,
                   ServiceOptions options);

  grpc::ServerWriteReactor<iris::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const iris::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const iris::v1::TokenizeRequest* request,
                                     iris::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const iris::v1::GetServerInfoRequest* request,
                                          iris::v1::ServerInfo* response) override;

  int active_streams() const { return active_.load(); }

 private:
  class GenerateReactor;
  // OK, or UNAUTHENTICATED when an API key is configured and the call does not carry it.
  grpc::Status authenticate(const grpc::CallbackServerContext* ctx) const;
  // Validates and converts; a non-OK status names the offending field.
  grpc::Status to_engine_request(const iris::v1::GenerateRequest& in, EngineRequest& out) const;

  Engine& engine_;
  const ModelConfig& config_;
  const Tokenizer* tokenizer_;
  ServiceOptions options_;
  std::atomic<int> active_{0};
  mutable std::atomic<uint64_t> next_id_{0};
};

}  // namespace iris::server
