// The gRPC `iris.v1.Inference` service: translates its messages to the request layer's
// GenerationInput and the engine's outputs back (callback API: no thread per stream). Every
// rule of a request lives in server/request; this file only speaks protobuf.
#pragma once

#include <grpcpp/grpcpp.h>

#include "iris/v1/inference.grpc.pb.h"
#include "server/request/request_layer.h"

namespace iris::server {

// The gRPC status for a request-layer status.
grpc::Status to_grpc(const Status& s);

class InferenceService final : public iris::v1::Inference::CallbackService {
 public:
  explicit InferenceService(RequestLayer& layer) : layer_(layer) {}

  grpc::ServerWriteReactor<iris::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const iris::v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<iris::v1::GenerateResponse>* Chat(
      grpc::CallbackServerContext* ctx, const iris::v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const iris::v1::DetokenizeRequest* request,
                                       iris::v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const iris::v1::ListModelsRequest* request,
                                       iris::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const iris::v1::TokenizeRequest* request,
                                     iris::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const iris::v1::GetServerInfoRequest* request,
                                          iris::v1::ServerInfo* response) override;

 private:
  class GenerateReactor;
  Status authenticate(const grpc::CallbackServerContext* ctx) const;
  // Prepares and starts a stream; a failure is the stream's final status.
  grpc::ServerWriteReactor<iris::v1::GenerateResponse>* start_stream(grpc::CallbackServerContext* ctx,
                                                                     GenerationInput in,
                                                                     bool return_prompt_ids);

  RequestLayer& layer_;
};

}  // namespace iris::server
