// The gRPC `iris.v1.Inference` service over a running Engine (callback API: no thread per
// stream). Generate streams each EngineOutput as a GenerateResponse; engine callbacks arrive
// on the engine thread and are queued onto the stream, one StartWrite outstanding at a time.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/chat_template/chat_template.h"
#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/loader/model_config.h"
#include "engine/tokenizer/tokenizer.h"
#include "iris/v1/inference.grpc.pb.h"
#include "server/decode_pool.h"

namespace iris::server {

struct ServiceOptions {
  std::string model_id;  // the served model's name (its directory's basename)
  std::string api_key;   // empty = no authentication
  int max_queue = 0;     // sequences waiting for a slot at most (0 = unlimited)
  int max_n = 16;        // choices per request at most
  int max_stop = 16;     // stop strings per request at most
  int max_stop_bytes = 256;
  int max_images = 8;  // images per request at most
  size_t max_image_bytes = 32u << 20;  // encoded image bytes per request at most
  int image_decode_threads = 2;         // workers that decode and preprocess images
  image::DecodeLimits image_limits;
  std::string version;
};

// Constant-time check of `authorization: Bearer <key>` against `key`.
bool bearer_matches(const std::string& authorization, const std::string& key);

class InferenceService final : public iris::v1::Inference::CallbackService {
 public:
  // tokenizer and chat_template may be null (token-id-only model; no Chat).
  InferenceService(Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer,
                   const ChatTemplate* chat_template, ServiceOptions options);

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

  int active_streams() const { return active_.load(); }
  // The image encoder of a vision-language model: requests' images are checked on their
  // headers on the gRPC thread, decoded and preprocessed on the decode pool, encoded by the
  // engine. Call before serving.
  void set_image_encoder(ImageEncoder* encoder);
  // While draining, new Generate/Chat calls get UNAVAILABLE; streams in flight continue.
  void set_draining(bool draining) { draining_.store(draining); }

 private:
  class GenerateReactor;
  struct ImageRef {
    const iris::v1::ImagePart* part;
    std::string where;  // its field path, for errors
  };
  // Images accepted on their headers, to decode on the pool: one per media span, in order.
  struct PendingImages {
    std::vector<std::string> data;
    std::vector<std::string> where;
  };
  // OK, or UNAUTHENTICATED when an API key is configured and the call does not carry it.
  grpc::Status authenticate(const grpc::CallbackServerContext* ctx) const;
  // NOT_FOUND unless `model` is empty or the served model.
  grpc::Status check_model(const std::string& model) const;
  // Validates the prompt and the sampling fields (shared by GenerateRequest and ChatRequest)
  // and fills `out`; a non-OK status names the offending field.
  template <class Req>
  grpc::Status to_engine_request(const Req& in, std::vector<int32_t> prompt,
                                 EngineRequest& out) const;
  // The chat template's prompt; image parts become media spans.
  grpc::Status chat_prompt(const iris::v1::ChatRequest& in, std::vector<int32_t>& prompt,
                           std::vector<MediaEmbeds>& media,
                           std::shared_ptr<PendingImages>& pending) const;
  // Admission (queue bound) and the stream that runs the request.
  grpc::ServerWriteReactor<iris::v1::GenerateResponse>* start_stream(
      const char* rpc, EngineRequest request, bool has_logprobs, bool return_prompt_ids,
      std::shared_ptr<PendingImages> pending = nullptr);
  // Checks a request's images (count, bytes, header, placeholder count) and expands the
  // prompt's placeholders into media spans, whose pixels `pending` will provide (null when
  // there are no images). `field` names the request field for errors about all images.
  grpc::Status attach_images(const std::vector<ImageRef>& images, const std::string& field,
                             std::vector<int32_t>& prompt, std::vector<MediaEmbeds>& media,
                             std::shared_ptr<PendingImages>& pending) const;
  // Decodes and preprocesses the images into the request's media spans (decode pool).
  grpc::Status decode_images(const PendingImages& pending, EngineRequest& request) const;

  Engine& engine_;
  const ModelConfig& config_;
  const Tokenizer* tokenizer_;
  const ChatTemplate* chat_template_;
  ImageEncoder* image_encoder_ = nullptr;
  ServiceOptions options_;
  std::atomic<int> active_{0};
  std::atomic<bool> draining_{false};
  mutable std::atomic<uint64_t> next_id_{0};
  // Last member: destroyed first, finishing its jobs while the rest still exists.
  std::unique_ptr<DecodePool> decode_pool_;
};

}  // namespace iris::server
