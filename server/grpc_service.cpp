// The gRPC Inference service: validation, the Generate stream reactor, Tokenize and
// GetServerInfo.
#include "server/grpc_service.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <mutex>
#include <sstream>
#include <utility>

#include "engine/chat_template/chat_prompt.h"
#include "engine/core/check.h"

namespace iris::server {

using grpc::Status;
using grpc::StatusCode;
using iris::v1::GenerateRequest;
using iris::v1::GenerateResponse;

bool bearer_matches(const std::string& authorization, const std::string& key) {
  static constexpr char kPrefix[] = "Bearer ";
  const std::string expected = kPrefix + key;
  // Compare every byte of the expected value whatever the input, so timing does not reveal
  // how much of the key matched.
  unsigned char diff = authorization.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char a = i < authorization.size() ? static_cast<unsigned char>(authorization[i]) : 0;
    diff |= a ^ static_cast<unsigned char>(expected[i]);
  }
  return diff == 0;
}

namespace {

Status invalid(const std::string& msg) { return Status(StatusCode::INVALID_ARGUMENT, msg); }

// A stream that fails before anything reaches the engine.
class FailedStream final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  explicit FailedStream(const Status& s) { Finish(s); }
  void OnDone() override { delete this; }
};

}  // namespace

class InferenceService::GenerateReactor final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  // Links the engine's callbacks (engine thread) to the reactor, which may be gone by then.
  struct Bridge {
    std::recursive_mutex mu;
    GenerateReactor* reactor = nullptr;
  };

  GenerateReactor(InferenceService& svc, const char* rpc, EngineRequest request, bool want_logprobs,
                  bool return_prompt_ids, std::shared_ptr<PendingImages> pending)
      : svc_(svc), rpc_(rpc), id_(request.id), n_(request.n), want_logprobs_(want_logprobs),
        prompt_tokens_(static_cast<int>(request.prompt.size())),
        bridge_(std::make_shared<Bridge>()), start_(std::chrono::steady_clock::now()) {
    bridge_->reactor = this;
    completion_tokens_.assign(n_, 0);
    finish_reasons_.assign(n_, "");
    if (return_prompt_ids) {
      GenerateResponse first;
      for (int32_t t : request.prompt) first.add_prompt_token_ids(t);
      queue_.push_back(std::move(first));
    }
    std::shared_ptr<Bridge> bridge = bridge_;
    {
      std::lock_guard<std::recursive_mutex> lock(bridge->mu);
      pump();
    }
    if (!pending) {
      submit(svc_, std::move(request), bridge);
      return;
    }
    // Images: decoded on the pool, then submitted, unless the call ended meanwhile.
    svc_.decode_pool_->post([&svc = svc_, bridge, pending, request = std::move(request)]() mutable {
      const Status s = svc.decode_images(*pending, request);
      std::lock_guard<std::recursive_mutex> lock(bridge->mu);
      GenerateReactor* r = bridge->reactor;
      if (!r || r->ending_) return;
      if (!s.ok()) {
        r->end(s);
        r->pump();
        return;
      }
      submit(svc, std::move(request), bridge);
    });
  }

  static void submit(InferenceService& svc, EngineRequest request, std::shared_ptr<Bridge> bridge) {
    svc.engine_.submit(std::move(request), [bridge](const EngineOutput& out) {
      std::lock_guard<std::recursive_mutex> lock(bridge->mu);
      if (bridge->reactor) bridge->reactor->on_output(out);  // may end in Finish → OnDone
    });
  }

  // Reactions hold a local reference to the bridge: once Finish is called, OnDone may delete
  // `this` before the lock is released, so nothing after pump() touches members.
  void OnWriteDone(bool ok) override {
    std::shared_ptr<Bridge> bridge = bridge_;
    std::lock_guard<std::recursive_mutex> lock(bridge->mu);
    writing_ = false;
    if (!ok) {
      // The client went away: stop generating and end the call.
      need_abort_ = true;
      end(Status(StatusCode::CANCELLED, "stream write failed"));
    }
    pump();
  }

  void OnCancel() override {
    Engine& engine = svc_.engine_;
    const std::string id = id_;
    engine.abort(id);
    std::shared_ptr<Bridge> bridge = bridge_;
    std::lock_guard<std::recursive_mutex> lock(bridge->mu);
    cancelled_ = true;
    end(Status(StatusCode::CANCELLED, "cancelled by the client"));
    pump();
  }

  void OnDone() override {
    bool abort = false;
    {
      std::lock_guard<std::recursive_mutex> lock(bridge_->mu);
      bridge_->reactor = nullptr;
      abort = finished_choices_ < n_ || need_abort_;
    }
    if (abort) svc_.engine_.abort(id_);
    log_done();
    svc_.active_.fetch_sub(1);
    delete this;
  }

 private:
  // Called with bridge_->mu held, on the engine thread.
  void on_output(const EngineOutput& out) {
    if (ending_) return;
    if (!out.error.empty()) {
      need_abort_ = true;
      end(out.engine_failed || any_tokens_ ? Status(StatusCode::INTERNAL, out.error)
                                           : invalid(out.error));
      pump();
      return;
    }
    const int i = out.index;
    if (i < 0 || i >= n_) return;
    GenerateResponse r;
    r.set_index(i);
    for (int32_t t : out.token_ids) r.add_token_ids(t);
    if (!out.token_ids.empty() && !any_tokens_) {
      any_tokens_ = true;
      first_token_ = std::chrono::steady_clock::now();
    }
    for (const auto& top : out.top_logprobs) {
      iris::v1::TopLogprobs* t = r.add_top_logprobs();
      for (const auto& [id, lp] : top) {
        t->add_token_ids(id);
        t->add_logprobs(lp);
      }
    }
    r.set_text(out.text);
    if (want_logprobs_)
      for (float lp : out.logprobs) r.add_logprobs(lp);
    completion_tokens_[i] = out.completion_tokens;
    if (out.finish_reason == FinishReason::kAbort) {
      // Only this reactor aborts its request (cancel, failed write): never a normal end.
      finish_reasons_[i] = finish_reason_name(*out.finish_reason);
      end(Status(StatusCode::CANCELLED, "aborted"));
      pump();
      return;
    }
    if (out.finish_reason) {
      finish_reasons_[i] = finish_reason_name(*out.finish_reason);
      r.set_finish_reason(finish_reasons_[i]);
      r.mutable_usage()->set_prompt_tokens(out.prompt_tokens);
      r.mutable_usage()->set_completion_tokens(out.completion_tokens);
      if (++finished_choices_ == n_) end(Status::OK);
    }
    queue_.push_back(std::move(r));
    pump();
  }

  // Records the final status; Finish is called once the queued writes are out.
  void end(const Status& s) {
    if (ending_) return;
    ending_ = true;
    final_status_ = s;
    if (!s.ok()) queue_.clear();
  }

  void pump() {
    if (writing_ || finish_called_) return;
    if (!queue_.empty() && !cancelled_) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (ending_) {
      finish_called_ = true;
      Finish(final_status_);
    }
  }

  void log_done() {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double ttft =
        any_tokens_ ? std::chrono::duration<double>(first_token_ - start_).count() : -1.0;
    int completion = 0;
    std::string reasons;
    for (int i = 0; i < n_; ++i) {
      completion += completion_tokens_[i];
      if (i) reasons += ",";
      reasons += finish_reasons_[i].empty() ? "-" : finish_reasons_[i];
    }
    spdlog::info("{} id={} status={} n={} prompt_tokens={} completion_tokens={} "
                 "finish_reason={} ttft={:.3f}s time={:.3f}s{}{}",
                 rpc_, id_, static_cast<int>(final_status_.error_code()), n_, prompt_tokens_,
                 completion, reasons, ttft, secs, final_status_.ok() ? "" : " error=",
                 final_status_.error_message());
  }

  InferenceService& svc_;
  const char* rpc_;
  const std::string id_;
  const int n_;
  const bool want_logprobs_;
  const int prompt_tokens_;
  std::shared_ptr<Bridge> bridge_;
  std::chrono::steady_clock::time_point start_, first_token_;

  // Guarded by bridge_->mu.
  std::deque<GenerateResponse> queue_;
  GenerateResponse current_;
  bool writing_ = false, ending_ = false, finish_called_ = false, cancelled_ = false;
  bool need_abort_ = false, any_tokens_ = false;
  int finished_choices_ = 0;
  std::vector<int> completion_tokens_;
  std::vector<std::string> finish_reasons_;
  Status final_status_;
};

InferenceService::InferenceService(Engine& engine, const ModelConfig& config,
                                   const Tokenizer* tokenizer, const ChatTemplate* chat_template,
                                   ServiceOptions options)
    : engine_(engine), config_(config), tokenizer_(tokenizer), chat_template_(chat_template),
      options_(std::move(options)) {}

Status InferenceService::authenticate(const grpc::CallbackServerContext* ctx) const {
  if (options_.api_key.empty()) return Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return Status(StatusCode::UNAUTHENTICATED, "missing authorization metadata");
  if (!bearer_matches(std::string(it->second.data(), it->second.size()), options_.api_key))
    return Status(StatusCode::UNAUTHENTICATED, "invalid API key");
  return Status::OK;
}

Status InferenceService::check_model(const std::string& model) const {
  if (model.empty() || model == options_.model_id) return Status::OK;
  return Status(StatusCode::NOT_FOUND, "model '" + model + "' is not served here (serving '" +
                                           options_.model_id + "')");
}

template <class Req>
Status InferenceService::to_engine_request(const Req& in, std::vector<int32_t> prompt,
                                           EngineRequest& out) const {
  if (prompt.empty()) return invalid("prompt: empty (set text or token_ids)");
  const int64_t vocab = config_.vocab_size;
  for (int32_t t : prompt)
    if (t < 0 || t >= vocab) {
      std::ostringstream os;
      os << "token_ids: id " << t << " is outside the vocabulary [0, " << vocab << ")";
      return invalid(os.str());
    }

  SamplingParams p;
  const auto& g = config_.generation;
  const int64_t ctx_len = engine_.max_model_len();
  const int64_t room = ctx_len - static_cast<int64_t>(prompt.size());
  if (room <= 0)
    return invalid("prompt: " + std::to_string(prompt.size()) +
                   " tokens leave no room in the context length " + std::to_string(ctx_len));
  if (in.has_max_tokens()) {
    if (in.max_tokens() <= 0)
      return invalid("max_tokens: must be positive, got " + std::to_string(in.max_tokens()));
    p.max_tokens = in.max_tokens();
  } else {
    p.max_tokens = static_cast<int>(room);
  }
  if (static_cast<int64_t>(prompt.size()) + p.max_tokens > ctx_len)
    return invalid("max_tokens: prompt (" + std::to_string(prompt.size()) + " tokens) + max_tokens (" +
                   std::to_string(p.max_tokens) + ") exceeds the context length " +
                   std::to_string(ctx_len));
  p.temperature = in.has_temperature() ? in.temperature() : g.temperature.value_or(1.0f);
  if (std::isnan(p.temperature) || p.temperature < 0)
    return invalid("temperature: must be >= 0, got " + std::to_string(p.temperature));
  p.top_p = in.has_top_p() ? in.top_p() : g.top_p.value_or(1.0f);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return invalid("top_p: must be in (0, 1], got " + std::to_string(p.top_p));
  p.top_k = in.has_top_k() ? in.top_k() : g.top_k.value_or(-1);
  if (p.top_k < -1) return invalid("top_k: must be >= -1, got " + std::to_string(p.top_k));
  p.min_p = in.has_min_p() ? in.min_p() : g.min_p.value_or(0.0f);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return invalid("min_p: must be in [0, 1], got " + std::to_string(p.min_p));
  p.repetition_penalty = in.has_repetition_penalty() ? in.repetition_penalty()
                                                     : g.repetition_penalty.value_or(1.0f);
  p.presence_penalty = in.presence_penalty();
  p.frequency_penalty = in.frequency_penalty();
  if (in.has_seed()) p.seed = in.seed();
  p.min_tokens = in.min_tokens();
  p.ignore_eos = in.ignore_eos();
  if (in.stop_size() > options_.max_stop)
    return invalid("stop: " + std::to_string(in.stop_size()) + " strings, at most " +
                   std::to_string(options_.max_stop));
  for (const std::string& st : in.stop()) {
    if (st.empty()) return invalid("stop: empty string");
    if (static_cast<int>(st.size()) > options_.max_stop_bytes)
      return invalid("stop: a string of " + std::to_string(st.size()) + " bytes, at most " +
                     std::to_string(options_.max_stop_bytes));
  }
  p.stop.assign(in.stop().begin(), in.stop().end());
  for (int32_t t : in.stop_token_ids())
    if (t < 0 || t >= vocab) return invalid("stop_token_ids: id " + std::to_string(t) + " outside the vocabulary");
  p.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  if (in.has_skip_special_tokens()) p.skip_special_tokens = in.skip_special_tokens();
  const int n = in.has_n() ? in.n() : 1;
  if (n < 1 || n > options_.max_n)
    return invalid("n: must be in [1, " + std::to_string(options_.max_n) + "], got " +
                   std::to_string(n));
  if (in.has_logprobs()) {
    if (in.logprobs() < 0 || in.logprobs() > SamplingParams::kMaxTopLogprobs)
      return invalid("logprobs: must be in [0, " + std::to_string(SamplingParams::kMaxTopLogprobs) +
                     "], got " + std::to_string(in.logprobs()));
    p.top_logprobs = in.logprobs();
  }
  try {
    p.validate();
  } catch (const Error& e) {
    return invalid(e.what());
  }
  out.id = "req-" + std::to_string(next_id_.fetch_add(1) + 1);
  out.prompt = std::move(prompt);
  out.params = std::move(p);
  out.n = n;
  return Status::OK;
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::start_stream(const char* rpc,
                                                                           EngineRequest er,
                                                                           bool has_logprobs,
                                                                           bool return_prompt_ids,
                                                                           std::shared_ptr<PendingImages> pending) {
  if (draining_.load())
    return new FailedStream(Status(StatusCode::UNAVAILABLE, "the server is shutting down"));
  const int decoding = decode_pool_ ? decode_pool_->pending() : 0;
  if (options_.max_queue > 0 && engine_.num_queued() + decoding >= options_.max_queue)
    return new FailedStream(Status(StatusCode::RESOURCE_EXHAUSTED,
                                   "the waiting queue is full (--max-queue " +
                                       std::to_string(options_.max_queue) + "); retry later"));
  active_.fetch_add(1);
  return new GenerateReactor(*this, rpc, std::move(er), has_logprobs, return_prompt_ids,
                             std::move(pending));
}

namespace {

grpc::ServerWriteReactor<GenerateResponse>* rejected(const char* rpc, const Status& s) {
  spdlog::info("{} rejected status={} error={}", rpc, static_cast<int>(s.error_code()),
               s.error_message());
  return new FailedStream(s);
}

}  // namespace

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* ctx, const GenerateRequest* request) {
  Status s = authenticate(ctx);
  if (!s.ok()) return new FailedStream(s);
  s = check_model(request->model());
  if (!s.ok()) return rejected("generate", s);
  std::vector<int32_t> prompt;
  switch (request->prompt_case()) {
    case GenerateRequest::kText:
      if (!tokenizer_) return rejected("generate", invalid("text: this model has no tokenizer; send token_ids"));
      if (request->text().empty()) return rejected("generate", invalid("text: empty prompt"));
      prompt = tokenizer_->encode(request->text(), /*add_special_tokens=*/true);
      break;
    case GenerateRequest::kTokenIds:
      prompt.assign(request->token_ids().ids().begin(), request->token_ids().ids().end());
      break;
    default:
      break;
  }
  std::vector<MediaEmbeds> media;
  std::shared_ptr<PendingImages> pending;
  // A vision model's prompt always goes through the image checks: placeholder tokens without
  // images are refused too.
  if (request->images_size() > 0 || image_encoder_) {
    std::vector<ImageRef> images;
    for (int i = 0; i < request->images_size(); ++i)
      images.push_back(ImageRef{&request->images(i), "images[" + std::to_string(i) + "]"});
    s = attach_images(images, "images", prompt, media, pending);
    if (!s.ok()) return rejected("generate", s);
  }
  EngineRequest er;
  s = to_engine_request(*request, std::move(prompt), er);
  if (!s.ok()) return rejected("generate", s);
  er.media = std::move(media);
  return start_stream("generate", std::move(er), request->has_logprobs(),
                      request->return_prompt_token_ids(), std::move(pending));
}

void InferenceService::set_image_encoder(ImageEncoder* encoder) {
  image_encoder_ = encoder;
  if (encoder && !decode_pool_) decode_pool_ = std::make_unique<DecodePool>(options_.image_decode_threads);
}

Status InferenceService::attach_images(const std::vector<ImageRef>& images, const std::string& field,
                                       std::vector<int32_t>& prompt, std::vector<MediaEmbeds>& media,
                                       std::shared_ptr<PendingImages>& pending) const {
  if (!image_encoder_)
    return invalid(field + ": model '" + options_.model_id + "' does not take images");
  if (static_cast<int>(images.size()) > options_.max_images)
    return invalid(field + ": " + std::to_string(images.size()) + " images, at most " +
                   std::to_string(options_.max_images) + " per request (--max-images)");
  size_t total = 0;
  for (const ImageRef& img : images) total += img.part->data().size();
  if (total > options_.max_image_bytes)
    return invalid(field + ": " + std::to_string(total) + " bytes of images, at most " +
                   std::to_string(options_.max_image_bytes) + " per request (--max-image-bytes)");
  // Header first, for every image: an oversized, truncated-header or unknown one is refused
  // before anything is decoded.
  for (const ImageRef& img : images) {
    const std::string& mime = img.part->mime_type();
    if (!mime.empty() && mime != "image/jpeg" && mime != "image/png")
      return invalid(img.where + ".mime_type: '" + mime + "' (expected image/jpeg or image/png)");
    try {
      const auto* data = reinterpret_cast<const uint8_t*>(img.part->data().data());
      image::probe(std::span<const uint8_t>(data, img.part->data().size()), options_.image_limits);
    } catch (const Error& e) {
      return invalid(img.where + ".data: " + e.what());
    }
  }
  const int32_t token = image_encoder_->image_token_id();
  int placeholders = 0;
  for (int32_t t : prompt) placeholders += t == token;
  if (placeholders != static_cast<int>(images.size()))
    return invalid(field + ": " + std::to_string(images.size()) + " images for " +
                   std::to_string(placeholders) + " image placeholder tokens (id " +
                   std::to_string(token) + ") in the prompt");
  // The spans now (the context checks need the expanded prompt); their pixels come from the
  // decode pool, and the engine encodes them when the prefill reaches each image (or not at
  // all while the same pixels are in its encoder cache).
  media = expand_image_placeholders(prompt, token, image_encoder_->tokens_per_image(),
                                    std::vector<ImageEncoder::Prepared>(images.size()));
  if (images.empty()) return Status::OK;
  pending = std::make_shared<PendingImages>();
  for (const ImageRef& img : images) {
    pending->data.push_back(img.part->data());
    pending->where.push_back(img.where);
  }
  return Status::OK;
}

Status InferenceService::decode_images(const PendingImages& pending, EngineRequest& request) const {
  for (size_t i = 0; i < pending.data.size(); ++i) {
    try {
      const auto* data = reinterpret_cast<const uint8_t*>(pending.data[i].data());
      const ImageEncoder::Prepared p = image_encoder_->prepare(
          std::span<const uint8_t>(data, pending.data[i].size()), options_.image_limits);
      request.media.at(i).encoder_input = p.patches;
      request.media.at(i).content_hash = p.cache_key();
    } catch (const Error& e) {
      return invalid(pending.where[i] + ".data: " + e.what());
    }
  }
  return Status::OK;
}

Status InferenceService::chat_prompt(const iris::v1::ChatRequest& in, std::vector<int32_t>& prompt,
                                     std::vector<MediaEmbeds>& media,
                                     std::shared_ptr<PendingImages>& pending) const {
  if (!tokenizer_ || !chat_template_)
    return Status(StatusCode::FAILED_PRECONDITION,
                  "this model has no chat template (tokenizer_config.json chat_template); use Generate");
  if (in.messages_size() == 0) return invalid("messages: empty");
  static const char* kRoles[] = {"system", "developer", "user", "assistant", "tool"};
  std::vector<ChatMessage> messages;
  std::vector<ImageRef> images;
  // Content goes to the template as a list of parts when it has images or when the template
  // iterates over content (vision templates); otherwise as one string.
  bool as_parts = chat_template_->iterates_content();
  for (int i = 0; i < in.messages_size(); ++i) {
    const iris::v1::ChatMessage& m = in.messages(i);
    const std::string where = "messages[" + std::to_string(i) + "]";
    bool known = false;
    for (const char* r : kRoles) known = known || m.role() == r;
    if (!known)
      return invalid(where + ".role: unknown role '" + m.role() +
                     "' (expected system, developer, user, assistant or tool)");
    ChatMessage cm;
    cm.role = m.role();
    for (int j = 0; j < m.content_size(); ++j) {
      const iris::v1::ContentPart& part = m.content(j);
      const std::string pw = where + ".content[" + std::to_string(j) + "]";
      switch (part.part_case()) {
        case iris::v1::ContentPart::kText:
          if (!cm.content.empty()) cm.content += "\n";
          cm.content += part.text();
          cm.parts.push_back(ChatContentPart{ChatContentPart::Kind::kText, part.text()});
          break;
        case iris::v1::ContentPart::kImage:
          if (!image_encoder_)
            return invalid(pw + ".image: model '" + options_.model_id + "' does not take images");
          cm.parts.push_back(ChatContentPart{ChatContentPart::Kind::kImage, {}});
          images.push_back(ImageRef{&part.image(), pw + ".image"});
          as_parts = true;
          break;
        default:
          return invalid(pw + ": empty content part");
      }
    }
    messages.push_back(std::move(cm));
  }
  for (ChatMessage& cm : messages) cm.as_parts = as_parts;
  const bool add_gen = in.has_add_generation_prompt() ? in.add_generation_prompt() : true;
  try {
    prompt = build_chat_prompt(*chat_template_, *tokenizer_, messages, add_gen).ids;
  } catch (const Error& e) {
    return invalid(std::string("messages: ") + e.what());
  }
  if (images.empty()) {
    // Placeholder tokens can come only from the template's markup (message text stays text),
    // so a template that writes one without an image is refused rather than run unfilled.
    if (image_encoder_)
      for (int32_t t : prompt)
        if (t == image_encoder_->image_token_id())
          return invalid("messages: the chat template wrote an image placeholder for no image");
    return Status::OK;
  }
  const Status s = attach_images(images, "messages", prompt, media, pending);
  if (!s.ok() && s.error_code() == StatusCode::INVALID_ARGUMENT &&
      s.error_message().find("image placeholder tokens") != std::string::npos)
    return invalid(s.error_message() + " (this model's chat template does not write one " +
                   "placeholder per image part)");
  return s;
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Chat(
    grpc::CallbackServerContext* ctx, const iris::v1::ChatRequest* request) {
  Status s = authenticate(ctx);
  if (!s.ok()) return new FailedStream(s);
  s = check_model(request->model());
  if (!s.ok()) return rejected("chat", s);
  std::vector<int32_t> prompt;
  std::vector<MediaEmbeds> media;
  std::shared_ptr<PendingImages> pending;
  s = chat_prompt(*request, prompt, media, pending);
  if (!s.ok()) return rejected("chat", s);
  EngineRequest er;
  s = to_engine_request(*request, std::move(prompt), er);
  if (!s.ok()) return rejected("chat", s);
  er.media = std::move(media);
  return start_stream("chat", std::move(er), request->has_logprobs(),
                      request->return_prompt_token_ids(), std::move(pending));
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* ctx,
                                                       const iris::v1::DetokenizeRequest* request,
                                                       iris::v1::DetokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok()) s = check_model(request->model());
  if (s.ok() && !tokenizer_)
    s = Status(StatusCode::FAILED_PRECONDITION, "this model has no tokenizer.json");
  if (s.ok())
    for (int32_t t : request->token_ids())
      if (t < 0 || t >= tokenizer_->vocab_size()) {
        s = invalid("token_ids: id " + std::to_string(t) + " is outside the vocabulary [0, " +
                    std::to_string(tokenizer_->vocab_size()) + ")");
        break;
      }
  if (s.ok()) {
    const std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
    response->set_text(tokenizer_->decode(ids, request->skip_special_tokens()));
  }
  reactor->Finish(s);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* ctx,
                                                       const iris::v1::ListModelsRequest*,
                                                       iris::v1::ListModelsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok()) {
    iris::v1::ModelCard* card = response->add_models();
    card->set_id(options_.model_id);
    card->set_max_context_length(engine_.max_model_len());
    card->set_vocab_size(config_.vocab_size);
    card->set_architecture(config_.architecture_name);
    card->set_has_chat_template(chat_template_ != nullptr);
  }
  reactor->Finish(s);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* ctx,
                                                     const iris::v1::TokenizeRequest* request,
                                                     iris::v1::TokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok()) s = check_model(request->model());
  if (s.ok() && !tokenizer_)
    s = Status(StatusCode::FAILED_PRECONDITION, "this model has no tokenizer.json");
  if (s.ok())
    for (int32_t t : tokenizer_->encode(request->text(), request->add_special_tokens()))
      response->add_token_ids(t);
  reactor->Finish(s);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                          const iris::v1::GetServerInfoRequest*,
                                                          iris::v1::ServerInfo* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok()) {
    const EngineStats st = engine_.stats();
    response->set_model_id(options_.model_id);
    response->set_max_context_length(engine_.max_model_len());
    response->set_kv_blocks_total(st.num_total_blocks);
    response->set_kv_blocks_free(st.num_free_blocks);
    response->set_running(st.num_running);
    response->set_waiting(st.num_waiting);
    response->set_version(options_.version);
    response->set_vocab_size(config_.vocab_size);
    response->set_streams(active_.load());
    response->set_encoder_cache_queries(st.encoder_cache.queries);
    response->set_encoder_cache_hits(st.encoder_cache.hits);
    response->set_images_encoded(st.encoder_cache.encoded_items);
  }
  reactor->Finish(s);
  return reactor;
}

}  // namespace iris::server
