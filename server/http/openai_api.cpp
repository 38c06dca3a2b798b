// The OpenAI-compatible endpoints: JSON ↔ request layer, non-streamed responses and SSE.
#include "server/http/openai_api.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

#include "engine/core/check.h"
#include "server/http/media_fetch.h"
#include "server/http/openai_request.h"

namespace iris::server::http {

using nlohmann::json;
using namespace openai;  // the request-body readers (openai_request.h)

namespace {

int http_status(Code c) {
  switch (c) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument:
    case Code::kFailedPrecondition: return 400;
    case Code::kNotFound: return 404;
    case Code::kUnauthenticated: return 401;
    case Code::kResourceExhausted: return 429;
    case Code::kTooLarge: return 413;
    case Code::kUnavailable: return 503;
    case Code::kCancelled: return 499;
    case Code::kInternal: return 500;
  }
  return 500;
}

const char* error_type(Code c) {
  switch (c) {
    case Code::kInvalidArgument:
    case Code::kFailedPrecondition:
    case Code::kTooLarge: return "invalid_request_error";
    case Code::kNotFound: return "not_found_error";
    case Code::kUnauthenticated: return "authentication_error";
    case Code::kResourceExhausted: return "rate_limit_error";
    case Code::kUnavailable: return "service_unavailable_error";
    default: return "internal_error";
  }
}

json error_json(const Status& s) {
  return json{{"error",
               {{"message", s.message},
                {"type", error_type(s.code)},
                {"param", s.param.empty() ? json(nullptr) : json(s.param)},
                {"code", code_name(s.code)}}}};
}

void respond_json(HttpExchange& ex, int status, const json& body, Headers headers = {}) {
  ex.respond(status, "application/json", body.dump(-1, ' ', false, json::error_handler_t::replace),
             std::move(headers));
}

void respond_error(HttpExchange& ex, const Status& s, Headers headers = {}) {
  respond_json(ex, http_status(s.code), error_json(s), std::move(headers));
}

// --- logprobs ---------------------------------------------------------------------------------

double clamp_lp(float lp) { return std::isfinite(lp) ? lp : (std::isnan(lp) ? -9999.0 : std::max(-9999.0, static_cast<double>(lp))); }

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

std::string hex_id() {
  static std::atomic<uint64_t> counter{0};
  const uint64_t t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  const uint64_t v = (t * 0x9E3779B97F4A7C15ull) ^ (counter.fetch_add(1) << 1);
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

long long unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// One HTTP call being served.
struct OpenAIApi::Call {
  HttpRequest request;
  std::shared_ptr<HttpExchange> exchange;
  json body;
  Headers headers;  // echoed on the response (x-request-id)
};

// A chat or completions request in flight: one engine request per prompt, each with n choices
// (choice index = prompt * n + choice, as OpenAI indexes a list of prompts). Outputs arrive on
// the engine thread; everything here is guarded by mu_.
class OpenAIApi::Generation final : public OutputSink,
                                    public std::enable_shared_from_this<Generation> {
 public:
  Generation(RequestLayer& layer, std::shared_ptr<HttpExchange> ex, bool chat, bool stream,
             bool include_usage, std::string model, Headers headers)
      : layer_(layer), ex_(std::move(ex)), chat_(chat), stream_(stream),
        include_usage_(include_usage), model_(std::move(model)), headers_(std::move(headers)),
        id_((chat ? "chatcmpl-" : "cmpl-") + hex_id()), created_(unix_now()) {}

  struct Prompt {
    PreparedRequest request;
    std::string echo;  // prompt text to prepend (completions' echo)
  };

  // Starts every prompt's request; on a failure nothing keeps running and the client gets
  // the error. Called once, on the I/O (or fetch) thread.
  void start(std::vector<Prompt> prompts, int top_logprobs, bool tokens_as_ids) {
    std::lock_guard<std::mutex> lock(mu_);
    top_n_ = top_logprobs;
    tokens_as_ids_ = tokens_as_ids;
    n_ = prompts.front().request.engine.n;
    chat_output_ = prompts.front().request.chat_output;
    want_logprobs_ = prompts.front().request.want_logprobs;
    bool has_id = false;
    for (const auto& [k, v] : headers_) has_id = has_id || k == "x-request-id";
    if (!has_id) headers_.emplace_back("x-request-id", prompts.front().request.request_id);
    for (Prompt& p : prompts) {
      records_.emplace_back(p.request);
      ids_.push_back(p.request.engine.id);
      echo_.push_back(p.echo);
    }
    choices_.resize(prompts.size() * static_cast<size_t>(n_));
    for (size_t p = 0; p < prompts.size(); ++p)
      for (int i = 0; i < n_; ++i) choices_[p * n_ + i].text = echo_[p];
    std::weak_ptr<Generation> weak = weak_from_this();
    ex_->on_close([weak] {
      if (auto self = weak.lock()) self->client_gone();
    });
    started_.assign(prompts.size(), false);
    for (size_t p = 0; p < prompts.size(); ++p) {
      const char* rpc = prompts[p].request.rpc;
      const Status s = layer_.start(std::move(prompts[p].request), shared_from_this());
      if (!s.ok()) {
        layer_.rejected(s, "http", rpc);
        fail_locked(s);
        return;
      }
      started_[p] = true;
      layer_.stream_opened();
      open_++;
    }
    if (!stream_) return;
    ex_->start_stream(200, "text/event-stream", headers_);
    header_sent_ = true;
    // The first chunk of each choice carries the role (chat) or the echoed prompt.
    for (size_t c = 0; c < choices_.size(); ++c) {
      if (chat_) {
        send_chunk_locked(choice_chunk(c, json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
      } else if (!echo_[c / n_].empty()) {
        send_chunk_locked(completion_chunk(c, echo_[c / n_], nullptr, nullptr));
      }
    }
  }

  void on_output(const EngineOutput& out) override {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t p = prompt_of(out.id);
    if (p == npos) return;
    // Counted even after the call ended (the abort that follows a disconnect finishes choices).
    const bool finished = records_[p].observe(out);
    if (done_) return;
    if (!out.error.empty()) {
      const bool internal = out.engine_failed || any_tokens_;
      fail_locked(Status(internal ? Code::kInternal : Code::kInvalidArgument, out.error));
      return;
    }
    if (out.finish_reason == FinishReason::kAbort) {
      // Only this front door aborts (client gone, slow reader); it has ended the call.
      finish_prompt(p, "cancelled");
      return;
    }
    any_tokens_ = any_tokens_ || !out.token_ids.empty();
    const size_t c = p * n_ + out.index;
    if (out.index < 0 || c >= choices_.size()) return;
    Choice& ch = choices_[c];
    ch.text += out.text;
    json lp = want_logprobs_ ? logprobs_json(ch, out) : json(nullptr);
    json finish = finished ? json(records_[p].finish_reason(out.index)) : json(nullptr);
    if (finished) ch.finish_reason = records_[p].finish_reason(out.index);
    if (finished && chat_ && !stream_ && chat_output_.tool_syntax != tools::ToolSyntax::kNone)
      ch.finish_reason = chat_finish_reason(ch.finish_reason, !parse_chat_output(chat_output_, ch.text).calls.empty());
    if (stream_) {
      if (chat_ && chat_output_.active()) {
        if (!ch.parser) ch.parser = std::make_unique<ChatOutputStream>(chat_output_);
        ChatOutputStream::Delta d = ch.parser->feed(out.text);
        if (finished) {
          ChatOutputStream::Delta last = ch.parser->finish();
          d.reasoning += last.reasoning;
          d.content += last.content;
          for (auto& call : last.calls) d.calls.push_back(std::move(call));
          finish = chat_finish_reason(ch.finish_reason, ch.parser->num_calls() > 0);
        }
        if (!d.empty() || finished || !lp.is_null())
          send_chunk_locked(choice_chunk(c, chat_delta(d), lp, finish));
      } else if (!out.text.empty() || finished || !lp.is_null()) {
        send_chunk_locked(chat_ ? choice_chunk(c, out.text.empty() && finished ? json::object()
                                                                               : json{{"content", out.text}},
                                               lp, finish)
                                : completion_chunk(c, out.text, lp, finish));
      }
      if (!done_ && ex_->pending_bytes() > layer_.options().max_pending_output_bytes) {
        spdlog::warn("{}: client not reading; {} bytes of output pending "
                     "(--max-pending-output-bytes {}); aborting the request",
                     id_, ex_->pending_bytes(), layer_.options().max_pending_output_bytes);
        abort_all_locked("slow_reader");
        ex_->abort_connection();
        return;
      }
    }
    if (finished && records_[p].all_finished()) finish_prompt(p, "ok");
    if (open_ == 0 && !done_) complete_locked();
  }

  bool wants_submission() override {
    std::lock_guard<std::mutex> lock(mu_);
    return !done_;
  }

 private:
  static constexpr size_t npos = static_cast<size_t>(-1);

  struct Choice {
    std::unique_ptr<ChatOutputStream> parser;  // streamed chat with a chat output format
    std::string text;
    std::string finish_reason;
    json logprobs_content = json::array();  // chat
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
         offsets = json::array();  // completions
    size_t offset = 0;
  };

  size_t prompt_of(const std::string& id) const {
    for (size_t i = 0; i < ids_.size(); ++i)
      if (ids_[i] == id) return i;
    return npos;
  }

  std::string token_str(int32_t id) const {
    return tokens_as_ids_ ? "token_id:" + std::to_string(id) : layer_.token_text(id);
  }

  json logprobs_json(Choice& ch, const EngineOutput& out) {
    if (chat_) {
      json content = json::array();
      for (size_t k = 0; k < out.token_ids.size(); ++k) {
        const std::string tok = token_str(out.token_ids[k]);
        json top = json::array();
        if (k < out.top_logprobs.size())
          for (const auto& [id, lp] : out.top_logprobs[k]) {
            const std::string t = token_str(id);
            top.push_back({{"token", t}, {"logprob", clamp_lp(lp)}, {"bytes", bytes_of(t)}});
          }
        json e = {{"token", tok},
                  {"logprob", clamp_lp(k < out.logprobs.size() ? out.logprobs[k] : NAN)},
                  {"bytes", bytes_of(tok)},
                  {"top_logprobs", std::move(top)}};
        ch.logprobs_content.push_back(e);
        content.push_back(std::move(e));
      }
      return json{{"content", std::move(content)}};
    }
    json tokens = json::array(), lps = json::array(), tops = json::array(), offs = json::array();
    for (size_t k = 0; k < out.token_ids.size(); ++k) {
      const std::string tok = token_str(out.token_ids[k]);
      const double lp = clamp_lp(k < out.logprobs.size() ? out.logprobs[k] : NAN);
      json top = json::object();
      if (k < out.top_logprobs.size())
        for (const auto& [id, l] : out.top_logprobs[k]) top[token_str(id)] = clamp_lp(l);
      tokens.push_back(tok);
      lps.push_back(lp);
      tops.push_back(top);
      offs.push_back(ch.offset);
      ch.offset += tok.size();
      ch.tokens.push_back(tok);
      ch.token_logprobs.push_back(lp);
      ch.top.push_back(top);
      ch.offsets.push_back(offs.back());
    }
    return json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", top_n_ > 0 ? tops : json(nullptr)},
                {"text_offset", offs}};
  }

  // The assistant message of a finished choice: content, reasoning_content and tool_calls as the
  // request's chat output format reads them out of the text. Sets the finish reason.
  json chat_message(const Choice& ch) const {
    if (!chat_output_.active()) return json{{"role", "assistant"}, {"content", ch.text}};
    const ChatResult r = parse_chat_output(chat_output_, ch.text);
    json m = {{"role", "assistant"}};
    const bool blank = r.content.find_first_not_of(" \t\r\n") == std::string::npos;
    m["content"] = !r.calls.empty() && blank ? json(nullptr) : json(r.content);
    if (r.has_reasoning) m["reasoning_content"] = r.reasoning;
    if (!r.calls.empty()) {
      json calls = json::array();
      for (const tools::ToolCall& c : r.calls)
        calls.push_back({{"id", c.id}, {"type", "function"},
                         {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
      m["tool_calls"] = std::move(calls);
    }
    return m;
  }

  // A streamed chat delta: reasoning_content, content and OpenAI's tool-call pieces.
  static json chat_delta(const ChatOutputStream::Delta& d) {
    json delta = json::object();
    if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
    if (!d.content.empty()) delta["content"] = d.content;
    if (!d.calls.empty()) {
      json calls = json::array();
      for (const tools::ToolCallDelta& c : d.calls) {
        json call = {{"index", c.index}};
        json fn = json::object();
        if (!c.id.empty()) {
          call["id"] = c.id;
          call["type"] = "function";
          fn["name"] = c.name;
        }
        fn["arguments"] = c.arguments;
        call["function"] = std::move(fn);
        calls.push_back(std::move(call));
      }
      delta["tool_calls"] = std::move(calls);
    }
    return delta;
  }

  json base(const char* object) const {
    return json{{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
  }

  json choice_chunk(size_t c, json delta, json lp, json finish) const {
    json j = base("chat.completion.chunk");
    j["choices"] = json::array({json{{"index", c}, {"delta", std::move(delta)}, {"logprobs", std::move(lp)},
                                     {"finish_reason", std::move(finish)}}});
    if (include_usage_) j["usage"] = nullptr;
    return j;
  }

  json completion_chunk(size_t c, const std::string& text, json lp, json finish) const {
    json j = base("text_completion");
    j["choices"] = json::array({json{{"index", c}, {"text", text}, {"logprobs", std::move(lp)},
                                     {"finish_reason", std::move(finish)}}});
    if (include_usage_) j["usage"] = nullptr;
    return j;
  }

  json usage() const {
    int prompt = 0, completion = 0;
    for (const RequestRecord& r : records_) {
      prompt += r.prompt_tokens();
      completion += r.total_completion_tokens();
    }
    return json{{"prompt_tokens", prompt}, {"completion_tokens", completion},
                {"total_tokens", prompt + completion}};
  }

  void send_chunk_locked(const json& j) {
    ex_->send("data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
  }

  // Every choice finished: the response (or the stream's end).
  void complete_locked() {
    done_ = true;
    if (stream_) {
      if (include_usage_) {
        json j = base(chat_ ? "chat.completion.chunk" : "text_completion");
        j["choices"] = json::array();
        j["usage"] = usage();
        send_chunk_locked(j);
      }
      ex_->send("data: [DONE]\n\n");
      ex_->end();
      return;
    }
    json j = base(chat_ ? "chat.completion" : "text_completion");
    json choices = json::array();
    for (size_t c = 0; c < choices_.size(); ++c) {
      const Choice& ch = choices_[c];
      json lp = nullptr;
      if (want_logprobs_) {
        lp = chat_ ? json{{"content", ch.logprobs_content}}
                   : json{{"tokens", ch.tokens}, {"token_logprobs", ch.token_logprobs},
                          {"top_logprobs", top_n_ > 0 ? ch.top : json(nullptr)}, {"text_offset", ch.offsets}};
      }
      if (chat_)
        choices.push_back({{"index", c},
                           {"message", chat_message(ch)},
                           {"logprobs", lp},
                           {"finish_reason", ch.finish_reason}});
      else
        choices.push_back({{"index", c}, {"text", ch.text}, {"logprobs", lp}, {"finish_reason", ch.finish_reason}});
    }
    j["choices"] = std::move(choices);
    j["usage"] = usage();
    respond_json(*ex_, 200, j, headers_);
  }

  // This prompt's request is over (its log line).
  void finish_prompt(size_t p, const char* status, const std::string& error = {}) {
    if (p >= started_.size() || !started_[p]) return;
    started_[p] = false;
    --open_;
    records_[p].log_done(status, error);
    layer_.stream_closed();
  }

  void abort_all_locked(const char* status, const std::string& error = {}) {
    done_ = true;
    for (size_t p = 0; p < ids_.size(); ++p)
      if (started_[p]) {
        layer_.abort(ids_[p]);
        finish_prompt(p, status, error);
      }
  }

  void fail_locked(const Status& s) {
    abort_all_locked(code_name(s.code), s.message);
    if (header_sent_) {
      send_chunk_locked(error_json(s));
      ex_->send("data: [DONE]\n\n");
      ex_->end();
    } else {
      respond_error(*ex_, s, headers_);
    }
  }

  void client_gone() {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    abort_all_locked("cancelled", "client disconnected");
  }

  RequestLayer& layer_;
  std::shared_ptr<HttpExchange> ex_;
  const bool chat_, stream_, include_usage_;
  const std::string model_;
  Headers headers_;
  const std::string id_;
  const long long created_;

  std::mutex mu_;
  int n_ = 1, top_n_ = 0, open_ = 0;
  bool want_logprobs_ = false, done_ = false, any_tokens_ = false, header_sent_ = false;
  bool tokens_as_ids_ = false;  // vLLM's return_tokens_as_token_ids
  std::vector<RequestRecord> records_;
  std::vector<std::string> ids_;
  std::vector<std::string> echo_;
  std::vector<bool> started_;
  std::vector<Choice> choices_;
  ChatOutputFormat chat_output_;
};

OpenAIApi::OpenAIApi(RequestLayer& layer, OpenAIOptions options)
    : layer_(layer), options_(std::move(options)), created_(unix_now()) {
  if (!options_.allowed_media_domains.empty())
    fetch_pool_ = std::make_unique<DecodePool>(options_.media_fetch_threads);
}

OpenAIApi::~OpenAIApi() = default;

void OpenAIApi::handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
  Call call{std::move(request), std::move(exchange), json(), {}};
  HttpExchange& ex = *call.exchange;
  if (const std::string* rid = call.request.header("x-request-id"))
    call.headers.emplace_back("x-request-id", *rid);
  const std::string& path = call.request.path;
  const std::string& method = call.request.method;

  // Unauthenticated endpoints.
  if (path == "/health") {
    const bool ok = !layer_.draining() && layer_.engine().failure().empty();
    ex.respond(ok ? 200 : 503, "application/json", ok ? "{}" : R"({"status":"not serving"})", call.headers);
    return;
  }
  if (path == "/version") {
    respond_json(ex, 200, json{{"version", layer_.options().version}}, call.headers);
    return;
  }
  if (path == "/metrics" && metrics_) {
    ex.respond(200, "text/plain; version=0.0.4; charset=utf-8", metrics_(), call.headers);
    return;
  }

  struct Route {
    const char* method;
    const char* path;
    void (OpenAIApi::*fn)(Call&);
  };
  static const Route kRoutes[] = {
      {"POST", "/v1/chat/completions", &OpenAIApi::chat_completions},
      {"POST", "/v1/completions", &OpenAIApi::completions},
      {"POST", "/tokenize", &OpenAIApi::tokenize},
      {"POST", "/detokenize", &OpenAIApi::detokenize},
  };
  const Route* route = nullptr;
  bool path_known = false;
  for (const Route& r : kRoutes)
    if (path == r.path) {
      path_known = true;
      if (method == r.method) route = &r;
    }
  const bool models = path == "/v1/models" || path.rfind("/v1/models/", 0) == 0;
  if (models) path_known = true;
  auto reject = [&](const Status& st, Headers headers) {
    layer_.rejected(st, "http", path.c_str());
    respond_error(ex, st, std::move(headers));
  };
  if (!path_known) {
    reject(Status(Code::kNotFound, "no route for " + method + " " + path), call.headers);
    return;
  }
  if (!route && !(models && method == "GET")) {
    respond_json(ex, 405,
                 json{{"error", {{"message", "method " + method + " not allowed on " + path},
                                 {"type", "invalid_request_error"}, {"param", nullptr},
                                 {"code", "method_not_allowed"}}}},
                 call.headers);
    return;
  }
  const std::string* auth = call.request.header("authorization");
  const Status s = layer_.authenticate(auth ? std::optional<std::string_view>(*auth) : std::nullopt);
  if (!s.ok()) {
    Headers h = call.headers;
    h.emplace_back("WWW-Authenticate", "Bearer");
    reject(s, h);
    return;
  }
  try {
    if (models) {
      this->models(call, path.size() > 11 ? path.substr(11) : std::string());
      return;
    }
    try {
      call.body = json::parse(call.request.body);
    } catch (const json::parse_error& e) {
      reject(Status(Code::kInvalidArgument, std::string("request body is not valid JSON: ") + e.what()),
             call.headers);
      return;
    }
    if (!call.body.is_object()) bad(std::string("request body must be a JSON object, got ") + call.body.type_name());
    (this->*(route->fn))(call);
  } catch (const BadField& b) {
    reject(invalid(b.message), call.headers);
  } catch (const Error& e) {
    respond_error(ex, Status(Code::kInternal, e.what()), call.headers);
  }
}

void OpenAIApi::models(Call& call, const std::string& id) {
  const ServiceOptions& o = layer_.options();
  json card = {{"id", o.model_id},
               {"object", "model"},
               {"created", created_},
               {"owned_by", "iris"},
               {"root", o.model_id},
               {"parent", nullptr},
               {"max_model_len", layer_.engine().max_model_len()}};
  if (!id.empty()) {
    if (id != o.model_id) {
      respond_error(*call.exchange, layer_.check_model(id), call.headers);
      return;
    }
    respond_json(*call.exchange, 200, card, call.headers);
    return;
  }
  respond_json(*call.exchange, 200, json{{"object", "list"}, {"data", json::array({card})}}, call.headers);
}

void OpenAIApi::chat_completions(Call& call) {
  const json& b = call.body;
  auto in = std::make_shared<GenerationInput>();
  in->api = "http";
  in->rpc = "chat";
  in->model = opt_string(b, "model").value_or("");
  in->prompt_field = "messages";
  std::vector<std::pair<size_t, std::string>> remote;
  std::vector<std::pair<size_t, size_t>> remote_at;
  const auto ordered = nlohmann::ordered_json::parse(call.request.body);
  in->messages = chat_messages(b, ordered, options_.allowed_media_domains, remote, remote_at);
  tool_fields(ordered, *in);
  in->sampling = sampling_fields(b, /*chat=*/true);
  structured_output(b, *in);
  const bool logprobs = opt_bool(b, "logprobs").value_or(false);
  const auto top = opt_int(b, "top_logprobs");
  if (top && !logprobs && *top > 0) bad("top_logprobs: requires logprobs: true");
  if (logprobs) in->sampling.logprobs = top.value_or(0);
  in->add_generation_prompt = opt_bool(b, "add_generation_prompt").value_or(true);
  if (const json* k = field(b, "chat_template_kwargs")) {
    if (!k->is_object()) bad(std::string("chat_template_kwargs: must be an object, got ") + k->type_name());
    in->chat_template_kwargs = *k;
  }
  in->user = opt_string(b, "user").value_or("");
  if (const std::string* rid = call.request.header("x-request-id")) in->request_id = rid->substr(0, 256);
  in->client = call.request.remote;
  const bool stream = opt_bool(b, "stream").value_or(false);
  bool include_usage = false;
  if (const json* so = field(b, "stream_options")) {
    if (!so->is_object()) bad("stream_options: must be an object");
    include_usage = opt_bool(*so, "include_usage").value_or(false);
  }
  std::vector<std::pair<ImageInput*, std::string>> urls;
  for (size_t k = 0; k < remote.size(); ++k)
    urls.emplace_back(&(*in->messages)[remote_at[k].first].parts[remote_at[k].second].image, remote[k].second);
  auto exchange = call.exchange;
  Headers headers = call.headers;
  const int top_n = static_cast<int>(in->sampling.logprobs.value_or(0));
  const bool as_ids = opt_bool(b, "return_tokens_as_token_ids").value_or(false);
  with_remote_images(std::move(urls), exchange, [this, in, exchange, headers, stream, include_usage, top_n, as_ids] {
    PreparedRequest prepared;
    const Status s = layer_.prepare(*in, prepared);
    if (!s.ok()) {
      layer_.rejected(s, "http", "chat");
      respond_error(*exchange, s, headers);
      return;
    }
    auto gen = std::make_shared<Generation>(layer_, exchange, /*chat=*/true, stream, include_usage,
                                            layer_.options().model_id, headers);
    std::vector<Generation::Prompt> prompts;
    prompts.push_back(Generation::Prompt{std::move(prepared), {}});
    gen->start(std::move(prompts), top_n, as_ids);
  });
}

void OpenAIApi::completions(Call& call) {
  const json& b = call.body;
  if (field(b, "suffix")) bad("suffix: not supported (Iris serves no fill-in-the-middle models)");
  GenerationInput base;
  base.api = "http";
  base.rpc = "completions";
  base.model = opt_string(b, "model").value_or("");
  base.sampling = sampling_fields(b, /*chat=*/false);
  structured_output(b, base);
  base.sampling.logprobs = opt_int(b, "logprobs");
  base.user = opt_string(b, "user").value_or("");
  if (const std::string* rid = call.request.header("x-request-id")) base.request_id = rid->substr(0, 256);
  base.client = call.request.remote;
  const bool echo = opt_bool(b, "echo").value_or(false);
  if (echo && base.sampling.logprobs)
    bad("echo: echo with logprobs is not supported (prompt logprobs are not computed)");
  const bool stream = opt_bool(b, "stream").value_or(false);
  bool include_usage = false;
  if (const json* so = field(b, "stream_options")) {
    if (!so->is_object()) bad("stream_options: must be an object");
    include_usage = opt_bool(*so, "include_usage").value_or(false);
  }
  // prompt: a string, a list of strings, a list of token ids, or a list of such lists.
  const json* p = field(b, "prompt");
  if (!p) bad("prompt: required");
  std::vector<GenerationInput> inputs;
  auto add_text = [&](const json& v, const std::string& where) {
    GenerationInput in = base;
    in.text = v.get<std::string>();
    in.prompt_field = where;
    inputs.push_back(std::move(in));
  };
  auto add_ids = [&](const json& v, const std::string& where) {
    GenerationInput in = base;
    in.token_ids = int_list(v, where);
    in.prompt_field = where;
    inputs.push_back(std::move(in));
  };
  if (p->is_string()) {
    add_text(*p, "prompt");
  } else if (p->is_array()) {
    if (p->empty()) bad("prompt: empty list");
    if ((*p)[0].is_number()) {
      add_ids(*p, "prompt");
    } else {
      for (size_t i = 0; i < p->size(); ++i) {
        const json& e = (*p)[i];
        const std::string where = "prompt[" + std::to_string(i) + "]";
        if (e.is_string()) add_text(e, where);
        else if (e.is_array()) add_ids(e, where);
        else bad(where + ": must be a string or a list of token ids, got " + e.type_name());
      }
    }
  } else {
    bad(std::string("prompt: must be a string, a list of strings or token ids, got ") + p->type_name());
  }
  if (inputs.size() > 64) bad("prompt: " + std::to_string(inputs.size()) + " prompts, at most 64 per request");
  std::vector<Generation::Prompt> prompts;
  for (GenerationInput& in : inputs) {
    Generation::Prompt pr;
    const Status s = layer_.prepare(in, pr.request);
    if (!s.ok()) {
      layer_.rejected(s, "http", "completions");
      respond_error(*call.exchange, s, call.headers);
      return;
    }
    if (echo) {
      if (in.text) pr.echo = *in.text;
      else if (layer_.tokenizer())
        pr.echo = layer_.tokenizer()->decode(pr.request.engine.prompt, /*skip_special_tokens=*/false);
    }
    prompts.push_back(std::move(pr));
  }
  auto gen = std::make_shared<Generation>(layer_, call.exchange, /*chat=*/false, stream, include_usage,
                                          layer_.options().model_id, call.headers);
  gen->start(std::move(prompts), static_cast<int>(base.sampling.logprobs.value_or(0)),
             opt_bool(b, "return_tokens_as_token_ids").value_or(false));
}

void OpenAIApi::tokenize(Call& call) {
  const json& b = call.body;
  Status s = layer_.check_model(opt_string(b, "model").value_or(""));
  std::vector<int32_t> ids;
  if (s.ok()) {
    if (field(b, "messages")) {
      GenerationInput in;
      std::vector<std::pair<size_t, std::string>> remote;
      std::vector<std::pair<size_t, size_t>> remote_at;
      const auto ordered = nlohmann::ordered_json::parse(call.request.body);
      in.messages = chat_messages(b, ordered, {}, remote, remote_at);
      tool_fields(ordered, in);
      in.add_generation_prompt = opt_bool(b, "add_generation_prompt").value_or(true);
      if (const json* k = field(b, "chat_template_kwargs")) in.chat_template_kwargs = *k;
      std::vector<ImageInput> images;
      s = layer_.chat_prompt(in, ids, images);
    } else {
      const auto prompt = opt_string(b, "prompt");
      if (!prompt) bad("prompt: required (or messages)");
      s = layer_.tokenize(*prompt, opt_bool(b, "add_special_tokens").value_or(true), ids);
    }
  }
  if (!s.ok()) return respond_error(*call.exchange, s, call.headers);
  respond_json(*call.exchange, 200,
               json{{"count", ids.size()}, {"max_model_len", layer_.engine().max_model_len()},
                    {"tokens", ids}, {"token_strs", nullptr}},
               call.headers);
}

void OpenAIApi::detokenize(Call& call) {
  const json& b = call.body;
  Status s = layer_.check_model(opt_string(b, "model").value_or(""));
  const json* tokens = field(b, "tokens");
  if (s.ok() && !tokens) bad("tokens: required");
  std::string text;
  if (s.ok()) s = layer_.detokenize(int_list(*tokens, "tokens"), opt_bool(b, "skip_special_tokens").value_or(false), text);
  if (!s.ok()) {
    if (s.param == "token_ids") {
      s.param = "tokens";
      s.message = "tokens" + s.message.substr(9);
    }
    return respond_error(*call.exchange, s, call.headers);
  }
  respond_json(*call.exchange, 200, json{{"prompt", text}}, call.headers);
}

void OpenAIApi::with_remote_images(std::vector<std::pair<ImageInput*, std::string>> urls,
                                   std::shared_ptr<HttpExchange> exchange, std::function<void()> next) {
  if (urls.empty()) return next();
  if (!fetch_pool_) {
    respond_error(*exchange, invalid(urls.front().first->where + ": remote images are not enabled"));
    return;
  }
  fetch_pool_->post([this, urls = std::move(urls), exchange, next = std::move(next)] {
    for (const auto& [img, url] : urls) {
      std::string error;
      if (!fetch_media(url, options_.max_media_fetch_bytes, options_.media_fetch_timeout_s,
                       img->data, img->mime_type, error)) {
        const Status st = invalid(img->where + ": " + error);
        layer_.rejected(st, "http", "chat");
        respond_error(*exchange, st);
        return;
      }
    }
    next();
  });
}

}  // namespace iris::server::http
