// The gRPC Inference service: protobuf ↔ request layer, and the Generate/Chat stream reactor.
#include "server/grpc/grpc_service.h"

#include <spdlog/spdlog.h>

#include <deque>
#include <memory>
#include <mutex>
#include <utility>

namespace iris::server {

using iris::v1::GenerateRequest;
using iris::v1::GenerateResponse;

grpc::Status to_grpc(const Status& s) {
  using grpc::StatusCode;
  StatusCode c = StatusCode::UNKNOWN;
  switch (s.code) {
    case Code::kOk: return grpc::Status::OK;
    case Code::kInvalidArgument: c = StatusCode::INVALID_ARGUMENT; break;
    case Code::kNotFound: c = StatusCode::NOT_FOUND; break;
    case Code::kUnauthenticated: c = StatusCode::UNAUTHENTICATED; break;
    case Code::kResourceExhausted:
    case Code::kTooLarge: c = StatusCode::RESOURCE_EXHAUSTED; break;
    case Code::kUnavailable: c = StatusCode::UNAVAILABLE; break;
    case Code::kFailedPrecondition: c = StatusCode::FAILED_PRECONDITION; break;
    case Code::kCancelled: c = StatusCode::CANCELLED; break;
    case Code::kInternal: c = StatusCode::INTERNAL; break;
  }
  return grpc::Status(c, s.message);
}

namespace {

// A stream that fails before anything reaches the engine.
class FailedStream final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  explicit FailedStream(const grpc::Status& s) { Finish(s); }
  void OnDone() override { delete this; }
};

grpc::ServerWriteReactor<GenerateResponse>* rejected(const RequestLayer& layer, const char* rpc,
                                                     const Status& s) {
  layer.rejected(s, "grpc", rpc);
  return new FailedStream(to_grpc(s));
}

// The fields GenerateRequest and ChatRequest share (same names and numbers in both).
template <class Req>
SamplingFields sampling_fields(const Req& in) {
  SamplingFields f;
  if (in.has_max_tokens()) f.max_tokens = in.max_tokens();
  if (in.has_temperature()) f.temperature = in.temperature();
  if (in.has_top_p()) f.top_p = in.top_p();
  if (in.has_top_k()) f.top_k = in.top_k();
  if (in.has_min_p()) f.min_p = in.min_p();
  if (in.has_repetition_penalty()) f.repetition_penalty = in.repetition_penalty();
  if (in.has_seed()) f.seed = in.seed();
  f.stop.assign(in.stop().begin(), in.stop().end());
  f.stop_token_ids.assign(in.stop_token_ids().begin(), in.stop_token_ids().end());
  if (in.has_n()) f.n = in.n();
  f.ignore_eos = in.ignore_eos();
  f.min_tokens = in.min_tokens();
  f.presence_penalty = in.presence_penalty();
  f.frequency_penalty = in.frequency_penalty();
  if (in.has_logprobs()) f.logprobs = in.logprobs();
  if (in.has_skip_special_tokens()) f.skip_special_tokens = in.skip_special_tokens();
  return f;
}

// `where` names the ImagePart; errors name its data or mime_type field.
// The request's output constraint, if any.
template <class Req>
void structured_output(const Req& in, GenerationInput& out) {
  if (!in.has_structured_output()) return;
  using grammar::ConstraintKind;
  const iris::v1::StructuredOutput& so = in.structured_output();
  switch (so.kind_case()) {
    case iris::v1::StructuredOutput::kJsonSchema:
      out.constraint = grammar::Constraint{ConstraintKind::kJsonSchema, so.json_schema()};
      out.constraint_field = "structured_output.json_schema";
      break;
    case iris::v1::StructuredOutput::kJsonObject:
      if (!so.json_object()) return;
      out.constraint = grammar::Constraint{ConstraintKind::kJsonObject, ""};
      out.constraint_field = "structured_output.json_object";
      break;
    case iris::v1::StructuredOutput::kRegex:
      out.constraint = grammar::Constraint{ConstraintKind::kRegex, so.regex()};
      out.constraint_field = "structured_output.regex";
      break;
    case iris::v1::StructuredOutput::kChoice: {
      nlohmann::json list = nlohmann::json::array();
      for (const std::string& c : so.choice().choices()) list.push_back(c);
      out.constraint = grammar::Constraint{ConstraintKind::kChoice, list.dump()};
      out.constraint_field = "structured_output.choice";
      break;
    }
    case iris::v1::StructuredOutput::kGrammar:
      out.constraint = grammar::Constraint{ConstraintKind::kGbnf, so.grammar()};
      out.constraint_field = "structured_output.grammar";
      break;
    default:
      break;
  }
}

ImageInput image_input(const iris::v1::ImagePart& part, const std::string& where) {
  ImageInput in;
  in.data = part.data();
  in.mime_type = part.mime_type();
  in.where = where + ".data";
  in.mime_where = where + ".mime_type";
  in.min_pixels = part.min_pixels();
  in.max_pixels = part.max_pixels();
  in.pixels_where = where;
  return in;
}

}  // namespace

class InferenceService::GenerateReactor final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  // Links the engine's outputs (engine thread) to the reactor, which may be gone by then.
  struct Bridge final : OutputSink {
    std::recursive_mutex mu;
    GenerateReactor* reactor = nullptr;
    void on_output(const EngineOutput& out) override {
      std::lock_guard<std::recursive_mutex> lock(mu);
      if (reactor) reactor->on_output(out);  // may end in Finish → OnDone
    }
    bool wants_submission() override {
      std::lock_guard<std::recursive_mutex> lock(mu);
      return reactor && !reactor->ending_;
    }
  };

  GenerateReactor(InferenceService& svc, grpc::CallbackServerContext* ctx, PreparedRequest request,
                  bool return_prompt_ids)
      : svc_(svc), id_(request.engine.id), n_(request.engine.n),
        want_logprobs_(request.want_logprobs), record_(request),
        bridge_(std::make_shared<Bridge>()), chat_output_(request.chat_output) {
    if (chat_output_.active())
      for (int i = 0; i < n_; ++i) parsers_.push_back(std::make_unique<ChatOutputStream>(chat_output_));
    svc_.layer_.stream_opened();
    bridge_->reactor = this;
    ctx->AddInitialMetadata("x-request-id", request.request_id);
    if (return_prompt_ids) {
      GenerateResponse first;
      for (int32_t t : request.engine.prompt) first.add_prompt_token_ids(t);
      push(std::move(first));
    }
    std::shared_ptr<Bridge> bridge = bridge_;
    std::lock_guard<std::recursive_mutex> lock(bridge->mu);
    const char* rpc = request.rpc;
    const Status s = svc_.layer_.start(std::move(request), bridge);
    if (!s.ok()) {
      rejected_ = true;
      svc_.layer_.rejected(s, "grpc", rpc);
      end(to_grpc(s), code_name(s.code), s.message);
    }
    pump();
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
      end(grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed"), "cancelled");
    }
    pump();
  }

  void OnCancel() override {
    svc_.layer_.abort(id_);
    std::shared_ptr<Bridge> bridge = bridge_;
    std::lock_guard<std::recursive_mutex> lock(bridge->mu);
    cancelled_ = true;
    end(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"), "cancelled");
    pump();
  }

  void OnDone() override {
    bool abort = false;
    {
      std::lock_guard<std::recursive_mutex> lock(bridge_->mu);
      bridge_->reactor = nullptr;
      abort = !rejected_ && (!record_.all_finished() || need_abort_);
    }
    if (abort) svc_.layer_.abort(id_);
    if (!rejected_) record_.log_done(log_status_, log_error_);
    svc_.layer_.stream_closed();
    delete this;
  }

 private:
  // Called with bridge_->mu held, on the engine thread (or a decode-pool thread).
  void on_output(const EngineOutput& out) {
    // Counted even when the call is ending (an abort after a cancel is still a finished choice).
    const bool finished = record_.observe(out);
    if (ending_) return;
    if (!out.error.empty()) {
      need_abort_ = true;
      const bool internal = out.engine_failed || any_tokens_;
      end(grpc::Status(internal ? grpc::StatusCode::INTERNAL : grpc::StatusCode::INVALID_ARGUMENT,
                       out.error),
          internal ? "internal" : "invalid_argument", out.error);
      pump();
      return;
    }
    const int i = out.index;
    if (i < 0 || i >= n_) return;
    GenerateResponse r;
    r.set_index(i);
    for (int32_t t : out.token_ids) r.add_token_ids(t);
    any_tokens_ = any_tokens_ || !out.token_ids.empty();
    for (const auto& top : out.top_logprobs) {
      iris::v1::TopLogprobs* t = r.add_top_logprobs();
      for (const auto& [id, lp] : top) {
        t->add_token_ids(id);
        t->add_logprobs(lp);
      }
    }
    bool has_calls = false;
    if (!parsers_.empty()) {
      // Content, reasoning and tool-call pieces, as the OpenAI stream carries them.
      ChatOutputStream& parser = *parsers_[i];
      ChatOutputStream::Delta d = parser.feed(out.text);
      if (finished) {
        ChatOutputStream::Delta last = parser.finish();
        d.reasoning += last.reasoning;
        d.content += last.content;
        for (auto& c : last.calls) d.calls.push_back(std::move(c));
      }
      r.set_text(d.content);
      r.set_reasoning_content(d.reasoning);
      for (const tools::ToolCallDelta& c : d.calls) {
        iris::v1::ToolCallDelta* t = r.add_tool_calls();
        t->set_index(c.index);
        t->set_id(c.id);
        t->set_name(c.name);
        t->set_arguments(c.arguments);
      }
      has_calls = parser.num_calls() > 0;
    } else {
      r.set_text(out.text);
    }
    if (want_logprobs_)
      for (float lp : out.logprobs) r.add_logprobs(lp);
    if (out.finish_reason == FinishReason::kAbort) {
      // Only this reactor aborts its request (cancel, failed write): never a normal end.
      end(grpc::Status(grpc::StatusCode::CANCELLED, "aborted"), "cancelled");
      pump();
      return;
    }
    if (finished) {
      r.set_finish_reason(chat_finish_reason(record_.finish_reason(i), has_calls));
      r.mutable_usage()->set_prompt_tokens(out.prompt_tokens);
      r.mutable_usage()->set_completion_tokens(out.completion_tokens);
    }
    push(std::move(r));
    if (finished && record_.all_finished()) end(grpc::Status::OK, "ok");
    pump();
  }

  void push(GenerateResponse r) {
    queued_bytes_ += r.ByteSizeLong();
    queue_.push_back(std::move(r));
    if (queued_bytes_ > svc_.layer_.options().max_pending_output_bytes && !ending_) {
      // The client stopped reading: give up on it rather than buffer without bound.
      spdlog::warn("{}: client not reading; {} bytes of output pending (--max-pending-output-bytes "
                   "{}); aborting the request",
                   id_, queued_bytes_, svc_.layer_.options().max_pending_output_bytes);
      need_abort_ = true;
      end(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                       "the client is not reading the stream; output bound exceeded"),
          "slow_reader");
    }
  }

  // Records the final status; Finish is called once the queued writes are out.
  void end(const grpc::Status& s, const char* status_name, std::string error = {}) {
    if (ending_) return;
    ending_ = true;
    final_status_ = s;
    log_status_ = status_name;
    log_error_ = error.empty() && !s.ok() ? s.error_message() : std::move(error);
    if (!s.ok()) {
      queue_.clear();
      queued_bytes_ = 0;
    }
  }

  void pump() {
    if (writing_ || finish_called_) return;
    if (!queue_.empty() && !cancelled_) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= std::min(queued_bytes_, current_.ByteSizeLong());
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (ending_) {
      finish_called_ = true;
      Finish(final_status_);
    }
  }

  InferenceService& svc_;
  const std::string id_;
  const int n_;
  const bool want_logprobs_;
  RequestRecord record_;
  std::shared_ptr<Bridge> bridge_;
  const ChatOutputFormat chat_output_;
  std::vector<std::unique_ptr<ChatOutputStream>> parsers_;  // per choice, when active

  // Guarded by bridge_->mu.
  std::deque<GenerateResponse> queue_;
  size_t queued_bytes_ = 0;
  GenerateResponse current_;
  bool writing_ = false, ending_ = false, finish_called_ = false, cancelled_ = false;
  bool need_abort_ = false, any_tokens_ = false, rejected_ = false;
  grpc::Status final_status_;
  std::string log_status_ = "ok", log_error_;
};

Status InferenceService::authenticate(const grpc::CallbackServerContext* ctx) const {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  std::optional<std::string_view> auth;
  if (it != md.end()) auth = std::string_view(it->second.data(), it->second.size());
  return layer_.authenticate(auth);
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::start_stream(
    grpc::CallbackServerContext* ctx, GenerationInput in, bool return_prompt_ids) {
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("x-request-id"); it != md.end())
    in.request_id.assign(it->second.data(), std::min<size_t>(it->second.size(), 256));
  in.client = ctx->peer();
  PreparedRequest prepared;
  const Status s = layer_.prepare(in, prepared);
  if (!s.ok()) return rejected(layer_, in.rpc, s);
  return new GenerateReactor(*this, ctx, std::move(prepared), return_prompt_ids);
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* ctx, const GenerateRequest* request) {
  const Status s = authenticate(ctx);
  if (!s.ok()) return rejected(layer_, "generate", s);
  GenerationInput in;
  in.api = "grpc";
  in.rpc = "generate";
  in.model = request->model();
  switch (request->prompt_case()) {
    case GenerateRequest::kText:
      in.text = request->text();
      in.prompt_field = "text";
      break;
    case GenerateRequest::kTokenIds:
      in.token_ids.emplace(request->token_ids().ids().begin(), request->token_ids().ids().end());
      in.prompt_field = "token_ids";
      break;
    default:
      in.token_ids.emplace();
      break;
  }
  for (int i = 0; i < request->images_size(); ++i)
    in.images.push_back(image_input(request->images(i), "images[" + std::to_string(i) + "]"));
  in.sampling = sampling_fields(*request);
  structured_output(*request, in);
  return start_stream(ctx, std::move(in), request->return_prompt_token_ids());
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Chat(
    grpc::CallbackServerContext* ctx, const iris::v1::ChatRequest* request) {
  const Status s = authenticate(ctx);
  if (!s.ok()) return rejected(layer_, "chat", s);
  GenerationInput in;
  in.api = "grpc";
  in.rpc = "chat";
  in.model = request->model();
  in.prompt_field = "messages";
  auto& messages = in.messages.emplace();
  for (int i = 0; i < request->messages_size(); ++i) {
    const iris::v1::ChatMessage& m = request->messages(i);
    ChatInputMessage cm;
    cm.role = m.role();
    cm.content_null = m.content_size() == 0 && m.tool_calls_size() > 0;
    if (m.tool_calls_size() > 0) {
      // OpenAI's shape, which the request layer reads for both front doors.
      nlohmann::ordered_json calls = nlohmann::ordered_json::array();
      for (const iris::v1::ToolCall& c : m.tool_calls())
        calls.push_back({{"id", c.id()}, {"type", "function"},
                         {"function", {{"name", c.name()}, {"arguments", c.arguments()}}}});
      cm.extra["tool_calls"] = std::move(calls);
    }
    if (!m.tool_call_id().empty()) cm.extra["tool_call_id"] = m.tool_call_id();
    if (!m.name().empty()) cm.extra["name"] = m.name();
    for (int j = 0; j < m.content_size(); ++j) {
      const iris::v1::ContentPart& part = m.content(j);
      const std::string pw =
          "messages[" + std::to_string(i) + "].content[" + std::to_string(j) + "]";
      ChatInputPart p;
      switch (part.part_case()) {
        case iris::v1::ContentPart::kText:
          p.text = part.text();
          break;
        case iris::v1::ContentPart::kImage:
          p.kind = ChatInputPart::Kind::kImage;
          p.image = image_input(part.image(), pw + ".image");
          break;
        case iris::v1::ContentPart::kVideo:
          p.kind = ChatInputPart::Kind::kVideo;
          p.image.video = true;
          p.image.where = pw + ".video";
          p.image.fps_where = pw + ".video.fps";
          p.image.video_fps = part.video().fps();
          p.image.min_pixels = part.video().min_pixels();
          p.image.max_pixels = part.video().max_pixels();
          p.image.pixels_where = pw + ".video";
          if (!part.video().file().empty()) {
            if (part.video().frames_size() > 0)
              return rejected(layer_, "chat",
                              invalid(pw + ".video.file: set either file or frames, not both"));
            if (part.video().fps() != 0)
              return rejected(layer_, "chat",
                              invalid(pw + ".video.fps: applies to frames; a video file's own frame "
                                           "rate is used"));
            p.image.video_file = true;
            p.image.where = pw + ".video.file";
            p.image.data = part.video().file();
            break;
          }
          for (int f = 0; f < part.video().frames_size(); ++f)
            p.image.frames.push_back(image_input(part.video().frames(f),
                                                 pw + ".video.frames[" + std::to_string(f) + "]"));
          break;
        default:
          return rejected(layer_, "chat", invalid(pw + ": empty content part"));
      }
      cm.parts.push_back(std::move(p));
    }
    messages.push_back(std::move(cm));
  }
  in.add_generation_prompt =
      request->has_add_generation_prompt() ? request->add_generation_prompt() : true;
  if (request->tools_size() > 0) {
    in.tools = nlohmann::ordered_json::array();
    for (int i = 0; i < request->tools_size(); ++i) {
      const iris::v1::Tool& t = request->tools(i);
      nlohmann::ordered_json fn = {{"name", t.name()}};
      if (!t.description().empty()) fn["description"] = t.description();
      if (!t.parameters_json().empty()) {
        try {
          fn["parameters"] = nlohmann::ordered_json::parse(t.parameters_json());
        } catch (const nlohmann::json::exception& e) {
          return rejected(layer_, "chat",
                          invalid("tools[" + std::to_string(i) + "].parameters_json: not valid JSON (" + e.what() + ")"));
        }
      }
      in.tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
  }
  if (request->has_tool_choice()) {
    const iris::v1::ToolChoice& tc = request->tool_choice();
    if (tc.choice_case() == iris::v1::ToolChoice::kMode) in.tool_choice = tc.mode();
    else if (tc.choice_case() == iris::v1::ToolChoice::kFunctionName)
      in.tool_choice = {{"type", "function"}, {"function", {{"name", tc.function_name()}}}};
  }
  if (request->has_parallel_tool_calls()) in.parallel_tool_calls = request->parallel_tool_calls();
  in.sampling = sampling_fields(*request);
  structured_output(*request, in);
  return start_stream(ctx, std::move(in), request->return_prompt_token_ids());
}

grpc::ServerUnaryReactor* InferenceService::Detokenize(grpc::CallbackServerContext* ctx,
                                                       const iris::v1::DetokenizeRequest* request,
                                                       iris::v1::DetokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok()) s = layer_.check_model(request->model());
  if (s.ok()) {
    std::string text;
    s = layer_.detokenize(std::vector<int64_t>(request->token_ids().begin(), request->token_ids().end()),
                          request->skip_special_tokens(), text);
    response->set_text(std::move(text));
  }
  reactor->Finish(to_grpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ListModels(grpc::CallbackServerContext* ctx,
                                                       const iris::v1::ListModelsRequest*,
                                                       iris::v1::ListModelsResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  const Status s = authenticate(ctx);
  if (s.ok()) {
    iris::v1::ModelCard* card = response->add_models();
    card->set_id(layer_.options().model_id);
    card->set_max_context_length(layer_.engine().max_model_len());
    card->set_vocab_size(layer_.config().vocab_size);
    card->set_architecture(layer_.config().architecture_name);
    card->set_has_chat_template(layer_.chat_template() != nullptr);
  }
  reactor->Finish(to_grpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* ctx,
                                                     const iris::v1::TokenizeRequest* request,
                                                     iris::v1::TokenizeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  Status s = authenticate(ctx);
  if (s.ok()) s = layer_.check_model(request->model());
  std::vector<int32_t> ids;
  if (s.ok()) s = layer_.tokenize(request->text(), request->add_special_tokens(), ids);
  for (int32_t t : ids) response->add_token_ids(t);
  reactor->Finish(to_grpc(s));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                          const iris::v1::GetServerInfoRequest*,
                                                          iris::v1::ServerInfo* response) {
  auto* reactor = ctx->DefaultReactor();
  const Status s = authenticate(ctx);
  if (s.ok()) {
    const EngineStats st = layer_.engine().stats();
    response->set_model_id(layer_.options().model_id);
    response->set_max_context_length(layer_.engine().max_model_len());
    response->set_kv_blocks_total(st.num_total_blocks);
    response->set_kv_blocks_free(st.num_free_blocks);
    response->set_running(st.num_running);
    response->set_waiting(st.num_waiting);
    response->set_version(layer_.options().version);
    response->set_vocab_size(layer_.config().vocab_size);
    response->set_streams(layer_.active_streams());
    response->set_encoder_cache_queries(st.encoder_cache.queries);
    response->set_encoder_cache_hits(st.encoder_cache.hits);
    response->set_images_encoded(st.encoder_cache.encoded_items);
  }
  reactor->Finish(to_grpc(s));
  return reactor;
}

}  // namespace iris::server
