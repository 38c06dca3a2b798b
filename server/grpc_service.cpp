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

  GenerateReactor(InferenceService& svc, EngineRequest request, bool want_logprobs)
      : svc_(svc), id_(request.id), n_(request.n), want_logprobs_(want_logprobs),
        prompt_tokens_(static_cast<int>(request.prompt.size())),
        bridge_(std::make_shared<Bridge>()), start_(std::chrono::steady_clock::now()) {
    bridge_->reactor = this;
    completion_tokens_.assign(n_, 0);
    finish_reasons_.assign(n_, "");
    std::shared_ptr<Bridge> bridge = bridge_;
    svc_.engine_.submit(std::move(request), [bridge](const EngineOutput& out) {
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
      end(any_tokens_ ? Status(StatusCode::INTERNAL, out.error) : invalid(out.error));
      pump();
      return;
    }
    const int i = out.index;
    if (i < 0 || i >= n_) return;
    GenerateResponse r;
    r.set_index(i);
    for (int32_t t : out.token_ids) r.add_token_ids(t);
    if (!out.token_ids.empty()) any_tokens_ = true;
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
    int completion = 0;
    std::string reasons;
    for (int i = 0; i < n_; ++i) {
      completion += completion_tokens_[i];
      if (i) reasons += ",";
      reasons += finish_reasons_[i].empty() ? "-" : finish_reasons_[i];
    }
    spdlog::info("generate id={} status={} n={} prompt_tokens={} completion_tokens={} "
                 "finish_reason={} time={:.3f}s{}{}",
                 id_, static_cast<int>(final_status_.error_code()), n_, prompt_tokens_,
                 completion, reasons, secs, final_status_.ok() ? "" : " error=",
                 final_status_.error_message());
  }

  InferenceService& svc_;
  const std::string id_;
  const int n_;
  const bool want_logprobs_;
  const int prompt_tokens_;
  std::shared_ptr<Bridge> bridge_;
  std::chrono::steady_clock::time_point start_;

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
                                   const Tokenizer* tokenizer, ServiceOptions options)
    : engine_(engine), config_(config), tokenizer_(tokenizer), options_(std::move(options)) {}

Status InferenceService::authenticate(const grpc::CallbackServerContext* ctx) const {
  if (options_.api_key.empty()) return Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return Status(StatusCode::UNAUTHENTICATED, "missing authorization metadata");
  if (!bearer_matches(std::string(it->second.data(), it->second.size()), options_.api_key))
    return Status(StatusCode::UNAUTHENTICATED, "invalid API key");
  return Status::OK;
}

Status InferenceService::to_engine_request(const GenerateRequest& in, EngineRequest& out) const {
  if (!in.model().empty() && in.model() != options_.model_id)
    return Status(StatusCode::NOT_FOUND, "model '" + in.model() + "' is not served here (serving '" +
                                             options_.model_id + "')");
  std::vector<int32_t> prompt;
  switch (in.prompt_case()) {
    case GenerateRequest::kText:
      if (!tokenizer_) return invalid("text: this model has no tokenizer; send token_ids");
      prompt = tokenizer_->encode(in.text(), /*add_special_tokens=*/true);
      break;
    case GenerateRequest::kTokenIds:
      prompt.assign(in.token_ids().ids().begin(), in.token_ids().ids().end());
      break;
    default:
      break;
  }
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
  if (in.has_max_tokens()) {
    if (in.max_tokens() <= 0)
      return invalid("max_tokens: must be positive, got " + std::to_string(in.max_tokens()));
    p.max_tokens = in.max_tokens();
  } else {
    p.max_tokens = static_cast<int>(std::max<int64_t>(room, 1));
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
  p.stop.assign(in.stop().begin(), in.stop().end());
  p.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  const int n = in.has_n() ? in.n() : 1;
  if (n < 1 || n > 16) return invalid("n: must be in [1, 16], got " + std::to_string(n));
  if (in.has_logprobs() && in.logprobs() < 0)
    return invalid("logprobs: must be >= 0, got " + std::to_string(in.logprobs()));
  try {
    p.validate();
  } catch (const Error& e) {
    return invalid(e.what());
  }
  out.id = "grpc-" + std::to_string(next_id_.fetch_add(1) + 1);
  out.prompt = std::move(prompt);
  out.params = std::move(p);
  out.n = n;
  return Status::OK;
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* ctx, const GenerateRequest* request) {
  Status s = authenticate(ctx);
  if (!s.ok()) return new FailedStream(s);
  EngineRequest er;
  s = to_engine_request(*request, er);
  if (!s.ok()) {
    spdlog::info("generate rejected status={} error={}", static_cast<int>(s.error_code()),
                 s.error_message());
    return new FailedStream(s);
  }
  const int active = active_.fetch_add(1) + 1;
  if (options_.max_queue > 0 && active > options_.max_queue) {
    active_.fetch_sub(1);
    return new FailedStream(Status(StatusCode::RESOURCE_EXHAUSTED,
                                   "too many requests in flight (--max-queue " +
                                       std::to_string(options_.max_queue) + ")"));
  }
  return new GenerateReactor(*this, std::move(er), request->has_logprobs());
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* ctx,
                                                     const iris::v1::TokenizeRequest* request,
                                                     iris::v1::TokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok() && !request->model().empty() && request->model() != options_.model_id)
    s = Status(StatusCode::NOT_FOUND, "model '" + request->model() + "' is not served here");
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
  }
  reactor->Finish(s);
  return reactor;
}

}  // namespace iris::server
