// The request layer: validation, defaults, chat rendering, images, admission and the log line
// for both front doors. See request_layer.h.
#include "server/request/request_layer.h"

#include <spdlog/spdlog.h>

#include <cctype>
#include <cmath>
#include <limits>
#include <span>

#include "engine/chat_template/chat_prompt.h"
#include "engine/core/check.h"
#include "server/logging.h"

namespace iris::server {

bool bearer_matches(std::string_view authorization, const std::string& key) {
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

// --- RequestRecord ---------------------------------------------------------------------------

RequestRecord::RequestRecord(const PreparedRequest& r)
    : metrics_(r.metrics), id_(r.engine.id), request_id_(r.request_id.empty() ? r.engine.id : r.request_id),
      client_(r.client), prompt_text_(r.prompt_text), api_(r.api), rpc_(r.rpc), user_(r.user), n_(r.engine.n),
      prompt_tokens_(static_cast<int>(r.engine.prompt.size())), start_(r.arrival) {
  completion_tokens_.assign(n_, 0);
  finish_reasons_.assign(n_, "");
  clocks_.resize(n_);
}

void RequestRecord::finished_metrics(int index, FinishReason reason, const EngineOutput& out) {
  if (out.timing) timing_ = out.timing;
  if (!metrics_) return;
  metrics::RequestRecord m;
  m.api = std::string_view(api_) == "http" ? metrics::Api::kHttp : metrics::Api::kGrpc;
  m.finish_reason = reason;
  m.prompt_tokens = prompt_tokens_;
  m.completion_tokens = completion_tokens_[index];
  m.timing = out.timing;
  // Front door → Engine::submit: what the engine's own clock does not see.
  const double since_arrival =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  m.preprocess_seconds = std::max(0.0, since_arrival - (out.timing ? out.timing->e2e_seconds : 0.0));
  metrics_->on_request_finished(m);
}

bool RequestRecord::observe(const EngineOutput& out) {
  if (!out.error.empty()) {
    for (int i = 0; i < n_; ++i)
      if (finish_reasons_[i].empty()) {
        finish_reasons_[i] = finish_reason_name(FinishReason::kError);
        ++finished_;
        finished_metrics(i, FinishReason::kError, out);
      }
    return false;
  }
  if (out.index < 0 || out.index >= n_) return false;
  if (!out.token_ids.empty()) {
    if (!any_tokens_) {
      any_tokens_ = true;
      first_token_ = std::chrono::steady_clock::now();
    }
    if (metrics_) metrics_->on_tokens(static_cast<int>(out.token_ids.size()), clocks_[out.index].tick());
  }
  completion_tokens_[out.index] = out.completion_tokens;
  if (out.prompt_tokens > 0) prompt_tokens_ = out.prompt_tokens;
  if (!out.finish_reason) return false;
  if (!finish_reasons_[out.index].empty()) return false;
  ++finished_;
  finish_reasons_[out.index] = finish_reason_name(*out.finish_reason);
  finished_metrics(out.index, *out.finish_reason, out);
  return true;
}

int RequestRecord::total_completion_tokens() const {
  int total = 0;
  for (int c : completion_tokens_) total += c;
  return total;
}

void RequestRecord::log_done(std::string_view status, std::string_view error) const {
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double ttft = any_tokens_ ? std::chrono::duration<double>(first_token_ - start_).count() : -1.0;
  std::string reasons;
  for (int i = 0; i < n_; ++i) {
    if (i) reasons += ",";
    reasons += finish_reasons_[i].empty() ? "-" : finish_reasons_[i];
  }
  auto round3 = [](double v) { return std::round(v * 1e3) / 1e3; };
  nlohmann::ordered_json f;
  f["api"] = api_;
  f["request_id"] = request_id_;
  if (request_id_ != id_) f["id"] = id_;
  f["status"] = std::string(status);
  f["n"] = n_;
  f["prompt_tokens"] = prompt_tokens_;
  f["completion_tokens"] = total_completion_tokens();
  f["finish_reason"] = reasons;
  f["ttft_s"] = round3(ttft);
  f["e2e_s"] = round3(secs);
  if (timing_) {
    f["queue_s"] = round3(timing_->queue_seconds);
    f["prefill_s"] = round3(timing_->prefill_seconds);
    f["decode_s"] = round3(timing_->decode_seconds);
  }
  if (!client_.empty()) f["client"] = client_;
  if (!user_.empty()) f["user"] = user_;
  if (!error.empty()) f["error"] = std::string(error);
  if (!prompt_text_.empty()) f["prompt"] = prompt_text_;
  log_event(rpc_, f);
}

// --- RequestLayer ----------------------------------------------------------------------------

RequestLayer::RequestLayer(Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer,
                           const ChatTemplate* chat_template, ServiceOptions options)
    : engine_(engine), config_(config), tokenizer_(tokenizer), chat_template_(chat_template),
      options_(std::move(options)) {
  if (tokenizer_)
    constraints_ = std::make_unique<grammar::ConstraintCache>(grammar::TokenVocabulary::from_tokenizer(
        *tokenizer_, static_cast<int32_t>(config_.vocab_size), config_.eos_token_ids),
        64, options_.max_constraint_compile_ms);
  const auto reasoning = tools::reasoning_syntax_from_name(options_.reasoning_parser);
  IRIS_CHECK(reasoning) << "--reasoning-parser: '" << options_.reasoning_parser
                        << "' (expected none, qwen3 or deepseek_r1)";
  reasoning_ = *reasoning;
  if (options_.tool_call_parser == "auto" || options_.tool_call_parser.empty()) {
    if (chat_template_ && tokenizer_) {
      // "Qwen2ForCausalLM" -> "qwen2", as config.json's model_type spells it.
      std::string arch = config_.architecture_name;
      for (const char* suffix : {"ForCausalLM", "ForConditionalGeneration"})
        if (const size_t at = arch.find(suffix); at != std::string::npos) arch.resize(at);
      for (char& c : arch) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      tool_syntax_ = tools::detect_tool_syntax(chat_template_->source(), arch, [this](const std::string& t) {
        return tokenizer_->token_to_id(t).has_value() && tokenizer_->is_special(*tokenizer_->token_to_id(t));
      });
    }
  } else {
    const auto syntax = tools::tool_syntax_from_name(options_.tool_call_parser);
    IRIS_CHECK(syntax) << "--tool-call-parser: '" << options_.tool_call_parser
                       << "' (expected auto, llama3_json, hermes, mistral or none)";
    tool_syntax_ = *syntax;
  }
}

struct RequestLayer::ToolPlan {
  enum class Mode { kNone, kAuto, kRequired, kNamed } mode = Mode::kNone;
  std::vector<tools::ToolSpec> specs;  // in the order of `tools`
  std::string named;
};

Status RequestLayer::tool_plan(const GenerationInput& in, ToolPlan& plan) const {
  using Mode = ToolPlan::Mode;
  plan = ToolPlan{};
  if (!in.tools.is_null()) {
    if (!in.tools.is_array()) return invalid(std::string("tools: must be a list of tools, got ") + in.tools.type_name());
    if (in.tools.size() > 256) return invalid("tools: " + std::to_string(in.tools.size()) + " tools, at most 256");
    for (size_t i = 0; i < in.tools.size(); ++i) {
      const auto& t = in.tools[i];
      const std::string w = "tools[" + std::to_string(i) + "]";
      if (!t.is_object()) return invalid(w + ": must be an object {type, function}, got " + t.type_name());
      if (auto it = t.find("type"); it != t.end() && !it->is_null() && *it != "function")
        return invalid(w + ".type: " + it->dump() + " (only \"function\" tools are supported)");
      auto f = t.find("function");
      if (f == t.end() || !f->is_object())
        return invalid(w + ".function: required object {name, description, parameters}");
      auto name = f->find("name");
      if (name == f->end() || !name->is_string() || name->get<std::string>().empty())
        return invalid(w + ".function.name: required non-empty string");
      const std::string n = name->get<std::string>();
      if (n.size() > 64) return invalid(w + ".function.name: longer than 64 characters");
      for (char c : n)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
          return invalid(w + ".function.name: '" + n + "' may contain only letters, digits, '_', '-' and '.'");
      for (const tools::ToolSpec& s : plan.specs)
        if (s.name == n) return invalid(w + ".function.name: '" + n + "' is listed twice");
      tools::ToolSpec spec{n, nlohmann::ordered_json{{"type", "object"}, {"properties", nlohmann::ordered_json::object()}}};
      if (auto p = f->find("parameters"); p != f->end() && !p->is_null()) {
        if (!p->is_object()) return invalid(w + ".function.parameters: must be a JSON Schema object, got " + p->type_name());
        spec.parameters = *p;
      }
      plan.specs.push_back(std::move(spec));
    }
  }
  const auto& tc = in.tool_choice;
  const bool has_tools = !plan.specs.empty();
  if (tc.is_null()) {
    plan.mode = has_tools ? Mode::kAuto : Mode::kNone;
  } else if (tc.is_string()) {
    const std::string s = tc.get<std::string>();
    if (s == "none") plan.mode = Mode::kNone;
    else if (s == "auto") plan.mode = has_tools ? Mode::kAuto : Mode::kNone;
    else if (s == "required") plan.mode = Mode::kRequired;
    else
      return invalid("tool_choice: '" + s + "' (expected none, auto, required or {\"type\": \"function\", "
                     "\"function\": {\"name\": ...}})");
  } else if (tc.is_object()) {
    if (auto it = tc.find("type"); it != tc.end() && *it != "function")
      return invalid("tool_choice.type: " + it->dump() + " (expected \"function\")");
    auto f = tc.find("function");
    if (f == tc.end() || !f->is_object() || !f->contains("name") || !(*f)["name"].is_string())
      return invalid("tool_choice.function.name: required string");
    plan.mode = Mode::kNamed;
    plan.named = (*f)["name"].get<std::string>();
  } else {
    return invalid(std::string("tool_choice: must be a string or an object, got ") + tc.type_name());
  }
  if (plan.mode == Mode::kRequired || plan.mode == Mode::kNamed) {
    const char* what = plan.mode == Mode::kRequired ? "tool_choice: 'required'" : "tool_choice: a named function";
    if (!has_tools) return invalid(std::string(what) + " needs a non-empty tools list");
    if (plan.mode == Mode::kNamed) {
      bool found = false;
      for (const tools::ToolSpec& s : plan.specs) found = found || s.name == plan.named;
      if (!found) return invalid("tool_choice.function.name: no tool named '" + plan.named + "' in tools");
    }
    if (tool_syntax_ == tools::ToolSyntax::kNone)
      return invalid(std::string(what) + " needs the model's tool-call syntax, and none is known for '" +
                     options_.model_id + "' (start the server with --tool-call-parser llama3_json|hermes|mistral)");
    if (in.constraint)
      return invalid(std::string(what) + " cannot be combined with " + in.constraint_field);
  }
  return Status::OK();
}

RequestLayer::~RequestLayer() = default;

void RequestLayer::set_image_encoder(ImageEncoder* encoder) {
  image_encoder_ = encoder;
  if (encoder && !decode_pool_) decode_pool_ = std::make_unique<DecodePool>(options_.image_decode_threads);
}

Status RequestLayer::authenticate(std::optional<std::string_view> authorization) const {
  if (options_.api_key.empty()) return Status::OK();
  if (!authorization) return Status(Code::kUnauthenticated, "missing authorization (Bearer API key)");
  if (!bearer_matches(*authorization, options_.api_key))
    return Status(Code::kUnauthenticated, "invalid API key");
  return Status::OK();
}

void RequestLayer::rejected(const Status& s, const char* api, const char* what) const {
  nlohmann::ordered_json f;
  f["api"] = api;
  f["status"] = code_name(s.code);
  f["error"] = s.message;
  log_event(std::string(what) + " rejected", f);
  if (!metrics_) return;
  metrics::RejectReason reason = metrics::RejectReason::kInvalidArgument;
  switch (s.code) {
    case Code::kUnauthenticated: reason = metrics::RejectReason::kUnauthenticated; break;
    case Code::kResourceExhausted: reason = metrics::RejectReason::kQueueFull; break;
    case Code::kTooLarge: reason = metrics::RejectReason::kTooLarge; break;
    case Code::kUnavailable: reason = metrics::RejectReason::kDraining; break;
    case Code::kNotFound: reason = metrics::RejectReason::kNotFound; break;
    default: break;
  }
  metrics_->on_rejected(reason, std::string_view(api) == "http" ? metrics::Api::kHttp : metrics::Api::kGrpc);
}

Status RequestLayer::check_model(const std::string& model) const {
  if (model.empty() || model == options_.model_id) return Status::OK();
  return Status(Code::kNotFound,
                "model '" + model + "' is not served here (serving '" + options_.model_id + "')",
                "model");
}

std::string RequestLayer::next_request_id() const {
  return "req-" + std::to_string(next_id_.fetch_add(1) + 1);
}

namespace {

std::string num(double v) {
  std::string s = std::to_string(v);
  // 0.500000 -> 0.5
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  return s;
}

}  // namespace

Status RequestLayer::sampling_params(const SamplingFields& in, size_t prompt_len, SamplingParams& p,
                                     int& n) const {
  const auto& g = config_.generation;
  const int64_t vocab = config_.vocab_size;
  const int64_t ctx_len = engine_.max_model_len();
  const int64_t room = ctx_len - static_cast<int64_t>(prompt_len);
  if (room <= 0)
    return invalid("prompt: " + std::to_string(prompt_len) +
                   " tokens leave no room in the context length " + std::to_string(ctx_len));
  if (in.max_tokens) {
    if (*in.max_tokens <= 0)
      return invalid("max_tokens: must be positive, got " + std::to_string(*in.max_tokens));
    if (static_cast<int64_t>(prompt_len) + *in.max_tokens > ctx_len)
      return invalid("max_tokens: prompt (" + std::to_string(prompt_len) + " tokens) + max_tokens (" +
                     std::to_string(*in.max_tokens) + ") exceeds the context length " +
                     std::to_string(ctx_len));
    p.max_tokens = static_cast<int>(*in.max_tokens);
  } else {
    p.max_tokens = static_cast<int>(room);
  }
  p.temperature = in.temperature ? static_cast<float>(*in.temperature) : g.temperature.value_or(1.0f);
  if (std::isnan(p.temperature) || p.temperature < 0 || !std::isfinite(p.temperature))
    return invalid("temperature: must be a finite number >= 0, got " + num(p.temperature));
  p.top_p = in.top_p ? static_cast<float>(*in.top_p) : g.top_p.value_or(1.0f);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    return invalid("top_p: must be in (0, 1], got " + num(p.top_p));
  if (in.top_k && (*in.top_k < -1 || *in.top_k > std::numeric_limits<int>::max()))
    return invalid("top_k: must be >= -1, got " + std::to_string(*in.top_k));
  p.top_k = in.top_k ? static_cast<int>(*in.top_k) : g.top_k.value_or(-1);
  p.min_p = in.min_p ? static_cast<float>(*in.min_p) : g.min_p.value_or(0.0f);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    return invalid("min_p: must be in [0, 1], got " + num(p.min_p));
  p.repetition_penalty = in.repetition_penalty ? static_cast<float>(*in.repetition_penalty)
                                               : g.repetition_penalty.value_or(1.0f);
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    return invalid("repetition_penalty: must be > 0, got " + num(p.repetition_penalty));
  if (!std::isfinite(in.presence_penalty) || in.presence_penalty < -2 || in.presence_penalty > 2)
    return invalid("presence_penalty: must be in [-2, 2], got " + num(in.presence_penalty));
  if (!std::isfinite(in.frequency_penalty) || in.frequency_penalty < -2 || in.frequency_penalty > 2)
    return invalid("frequency_penalty: must be in [-2, 2], got " + num(in.frequency_penalty));
  p.presence_penalty = static_cast<float>(in.presence_penalty);
  p.frequency_penalty = static_cast<float>(in.frequency_penalty);
  if (in.seed) p.seed = *in.seed;
  if (in.min_tokens < 0 || in.min_tokens > p.max_tokens)
    return invalid("min_tokens: must be in [0, max_tokens], got " + std::to_string(in.min_tokens));
  p.min_tokens = static_cast<int>(in.min_tokens);
  p.ignore_eos = in.ignore_eos;
  if (static_cast<int>(in.stop.size()) > options_.max_stop)
    return invalid("stop: " + std::to_string(in.stop.size()) + " strings, at most " +
                   std::to_string(options_.max_stop));
  for (const std::string& st : in.stop) {
    if (st.empty()) return invalid("stop: empty string");
    if (static_cast<int>(st.size()) > options_.max_stop_bytes)
      return invalid("stop: a string of " + std::to_string(st.size()) + " bytes, at most " +
                     std::to_string(options_.max_stop_bytes));
  }
  p.stop = in.stop;
  for (int64_t t : in.stop_token_ids) {
    if (t < 0 || t >= vocab)
      return invalid("stop_token_ids: id " + std::to_string(t) + " outside the vocabulary");
    p.stop_token_ids.push_back(static_cast<int32_t>(t));
  }
  if (in.skip_special_tokens) p.skip_special_tokens = *in.skip_special_tokens;
  const int64_t nn = in.n.value_or(1);
  if (nn < 1 || nn > options_.max_n)
    return invalid("n: must be in [1, " + std::to_string(options_.max_n) + "], got " +
                   std::to_string(nn));
  n = static_cast<int>(nn);
  if (in.logprobs) {
    if (*in.logprobs < 0 || *in.logprobs > SamplingParams::kMaxTopLogprobs)
      return invalid("logprobs: must be in [0, " + std::to_string(SamplingParams::kMaxTopLogprobs) +
                     "], got " + std::to_string(*in.logprobs));
    p.top_logprobs = static_cast<int>(*in.logprobs);
  }
  if (static_cast<int>(in.logit_bias.size()) > options_.max_logit_bias)
    return invalid("logit_bias: " + std::to_string(in.logit_bias.size()) + " entries, at most " +
                   std::to_string(options_.max_logit_bias));
  for (const auto& [t, bias] : in.logit_bias) {
    if (t < 0 || t >= vocab)
      return invalid("logit_bias: token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                     std::to_string(vocab) + ")");
    if (!std::isfinite(bias) || bias < -100 || bias > 100)
      return invalid("logit_bias: bias " + num(bias) + " for token " + std::to_string(t) +
                     " must be in [-100, 100]");
    p.logit_bias.emplace_back(static_cast<int32_t>(t), static_cast<float>(bias));
  }
  try {
    p.validate();
  } catch (const Error& e) {
    return invalid(e.what());
  }
  return Status::OK();
}

Status RequestLayer::prepare(const GenerationInput& in, PreparedRequest& out) const {
  out.arrival = std::chrono::steady_clock::now();
  out.metrics = metrics_;
  Status s = check_model(in.model);
  if (!s.ok()) return s;
  out.api = in.api;
  out.rpc = in.rpc;
  out.user = in.user;
  std::vector<int32_t> prompt;
  std::vector<ImageInput> images = in.images;
  const std::string& pf = in.prompt_field;
  ToolPlan plan;
  std::shared_ptr<const grammar::CompiledConstraint> tool_constraint;
  bool keep_special_tokens = false;
  if (in.messages) {
    s = chat_prompt(in, prompt, images, &plan);
    if (!s.ok()) return s;
    s = chat_output_format(plan, in, prompt, out.chat_output, tool_constraint, keep_special_tokens);
    if (!s.ok()) return s;
  } else if (in.text) {
    if (!tokenizer_) return invalid(pf + ": this model has no tokenizer; send token ids");
    if (in.text->empty()) return invalid(pf + ": empty prompt");
    prompt = tokenizer_->encode(*in.text, /*add_special_tokens=*/true);
  } else if (in.token_ids) {
    const int64_t vocab = config_.vocab_size;
    for (int64_t t : *in.token_ids) {
      if (t < 0 || t >= vocab)
        return invalid(pf + ": token id " + std::to_string(t) + " is outside the vocabulary [0, " +
                       std::to_string(vocab) + ")");
      prompt.push_back(static_cast<int32_t>(t));
    }
  }
  if (prompt.empty()) return invalid(pf + ": empty prompt (send text or token ids)");
  std::vector<MediaEmbeds> media;
  // A vision model's prompt always goes through the image checks: placeholder tokens without
  // images are refused too.
  if (!images.empty() || (image_encoder_ && !in.messages)) {
    s = attach_images(images, in.messages ? "messages" : "images", prompt, media);
    if (!s.ok()) {
      if (in.messages && s.message.find("image placeholder tokens") != std::string::npos)
        s.message += " (this model's chat template does not write one placeholder per image part)";
      return s;
    }
  }
  SamplingParams p;
  int n = 1;
  s = sampling_params(in.sampling, prompt.size(), p, n);
  if (!s.ok()) return s;
  if (keep_special_tokens && !in.sampling.skip_special_tokens) p.skip_special_tokens = false;
  if (tool_constraint) p.constraint = std::move(tool_constraint);
  if (in.constraint) {
    // Compiled here, on the request's thread (with its first mask); cached by (kind, text).
    if (!constraints_) return invalid(in.constraint_field + ": this model has no tokenizer");
    try {
      p.constraint = constraints_->get(*in.constraint);
    } catch (const Error& e) {
      return invalid(in.constraint_field + ": " + e.what());
    }
  }
  out.want_logprobs = in.sampling.logprobs.has_value();
  out.engine.id = next_request_id();  // unique whatever the client sends as its own id
  out.request_id = in.request_id.empty() ? out.engine.id : in.request_id;
  out.client = in.client;
  if (options_.log_prompts) {
    std::string text = tokenizer_ ? tokenizer_->decode(prompt, false) : std::string();
    if (text.size() > 4096) text.resize(4096);
    out.prompt_text = std::move(text);
  }
  out.engine.prompt = std::move(prompt);
  out.engine.params = std::move(p);
  out.engine.n = n;
  out.engine.media = std::move(media);
  out.pending_images = std::move(images);
  return Status::OK();
}

Status RequestLayer::chat_output_format(const ToolPlan& plan, const GenerationInput& in,
                                        std::vector<int32_t>& prompt, ChatOutputFormat& format,
                                        std::shared_ptr<const grammar::CompiledConstraint>& constraint,
                                        bool& keep_special_tokens) const {
  using Mode = ToolPlan::Mode;
  format = ChatOutputFormat{};
  format.reasoning = reasoning_;
  if (plan.mode == Mode::kNone || tool_syntax_ == tools::ToolSyntax::kNone) return Status::OK();
  format.tool_syntax = tool_syntax_;
  // A marker the tokenizer treats as special is dropped from the text unless special tokens
  // are kept; then the EOS text is dropped instead.
  const std::string marker(tools::call_marker(tool_syntax_));
  std::optional<int32_t> marker_id;
  if (!marker.empty())
    if (auto id = tokenizer_->token_to_id(marker); id && tokenizer_->is_special(*id)) marker_id = id;
  if (plan.mode == Mode::kRequired || plan.mode == Mode::kNamed) {
    tools::ToolConstraint tc;
    try {
      tc = tools::tool_call_constraint(tool_syntax_, plan.specs, plan.named,
                                       in.parallel_tool_calls ? 8 : 1, marker_id.has_value());
      constraint = constraints_->get(tc.constraint);
    } catch (const Error& e) {
      // Name the tool whose parameters schema is refused.
      for (size_t i = 0; i < plan.specs.size(); ++i) {
        if (!plan.named.empty() && plan.specs[i].name != plan.named) continue;
        try {
          grammar::build_grammar({grammar::ConstraintKind::kJsonSchema, plan.specs[i].parameters.dump()});
        } catch (const Error& te) {
          return invalid("tools[" + std::to_string(i) + "].function.parameters: " + te.what());
        }
      }
      return invalid(std::string("tool_choice: ") + e.what());
    }
    if (tc.marker_in_prompt) {
      prompt.push_back(*marker_id);
      format.marker_prefilled = true;
    }
  }
  if (marker_id && !format.marker_prefilled) {
    keep_special_tokens = true;
    for (int32_t id : config_.eos_token_ids) {
      const std::string t = tokenizer_->id_to_token(id);
      if (!t.empty()) format.drop.push_back(t);
    }
  }
  return Status::OK();
}

Status RequestLayer::chat_prompt(const GenerationInput& in, std::vector<int32_t>& prompt,
                                 std::vector<ImageInput>& images) const {
  ToolPlan plan;
  return chat_prompt(in, prompt, images, &plan);
}

Status RequestLayer::chat_prompt(const GenerationInput& in, std::vector<int32_t>& prompt,
                                 std::vector<ImageInput>& images, ToolPlan* plan) const {
  if (!tokenizer_ || !chat_template_)
    return Status(Code::kFailedPrecondition,
                  "this model has no chat template (tokenizer_config.json chat_template); use "
                  "completions / Generate",
                  "messages");
  const std::vector<ChatInputMessage>& msgs = *in.messages;
  if (msgs.empty()) return invalid("messages: empty");
  Status ts = tool_plan(in, *plan);
  if (!ts.ok()) return ts;
  static const char* kRoles[] = {"system", "developer", "user", "assistant", "tool"};
  std::vector<ChatMessage> messages;
  images.clear();
  // Content goes to the template as a list of parts when it has images or when the template
  // iterates over content (vision templates); otherwise as one string.
  bool as_parts = chat_template_->iterates_content();
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatInputMessage& m = msgs[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    bool known = false;
    for (const char* r : kRoles) known = known || m.role == r;
    if (!known)
      return invalid(where + ".role: unknown role '" + m.role +
                     "' (expected system, developer, user, assistant or tool)");
    ChatMessage cm;
    cm.role = m.role;
    cm.extra = m.extra.is_object() ? m.extra : nlohmann::ordered_json::object();
    cm.null_content = m.content_null;
    Status hs = history_tool_calls(cm.extra, where);
    if (!hs.ok()) return hs;
    for (size_t j = 0; j < m.parts.size(); ++j) {
      const ChatInputPart& part = m.parts[j];
      if (part.kind == ChatInputPart::Kind::kText) {
        if (!cm.content.empty()) cm.content += "\n";
        cm.content += part.text;
        cm.parts.push_back(ChatContentPart{ChatContentPart::Kind::kText, part.text});
      } else {
        const bool video = part.kind == ChatInputPart::Kind::kVideo;
        if (!image_encoder_ || (video && !image_encoder_->qwen_processor()))
          return invalid(part.image.where + ": model '" + options_.model_id + "' does not take " +
                         (video ? "videos" : "images"));
        cm.parts.push_back(ChatContentPart{video ? ChatContentPart::Kind::kVideo
                                                 : ChatContentPart::Kind::kImage, {}});
        images.push_back(part.image);
        as_parts = true;
      }
    }
    messages.push_back(std::move(cm));
  }
  for (ChatMessage& cm : messages) cm.as_parts = as_parts;
  if (!in.chat_template_kwargs.is_object())
    return invalid("chat_template_kwargs: must be an object");
  for (const char* reserved : {"messages", "add_generation_prompt"})
    if (in.chat_template_kwargs.contains(reserved))
      return invalid(std::string("chat_template_kwargs: '") + reserved + "' is set by the request itself");
  // transformers' apply_chat_template(tools=...): the list as the client sent it.
  nlohmann::ordered_json context = in.chat_template_kwargs;
  if (!plan->specs.empty()) context["tools"] = in.tools;
  try {
    prompt = build_chat_prompt(*chat_template_, *tokenizer_, messages, in.add_generation_prompt, context).ids;
  } catch (const Error& e) {
    return invalid(std::string("messages: ") + e.what());
  }
  if (images.empty() && image_encoder_) {
    // Placeholder tokens can come only from the template's markup (message text stays text),
    // so a template that writes one without an image is refused rather than run unfilled.
    for (int32_t t : prompt)
      if (t == image_encoder_->image_token_id())
        return invalid("messages: the chat template wrote an image placeholder for no image");
  }
  return Status::OK();
}

// An assistant turn's tool_calls in OpenAI's shape: arguments arrive as a JSON string and reach
// the template as an object, as transformers' templates expect them (and vLLM passes them).
Status RequestLayer::history_tool_calls(nlohmann::ordered_json& extra, const std::string& where) const {
  auto it = extra.find("tool_calls");
  if (it == extra.end() || it->is_null()) return Status::OK();
  const std::string w = where + ".tool_calls";
  if (!it->is_array()) return invalid(w + ": must be a list, got " + it->type_name());
  for (size_t j = 0; j < it->size(); ++j) {
    auto& call = (*it)[j];
    const std::string cw = w + "[" + std::to_string(j) + "]";
    if (!call.is_object()) return invalid(cw + ": must be an object {id, type, function}");
    auto f = call.find("function");
    if (f == call.end() || !f->is_object()) return invalid(cw + ".function: required object {name, arguments}");
    auto name = f->find("name");
    if (name == f->end() || !name->is_string()) return invalid(cw + ".function.name: required string");
    auto args = f->find("arguments");
    if (args == f->end() || args->is_null()) continue;
    if (args->is_string()) {
      try {
        *args = nlohmann::ordered_json::parse(args->get<std::string>());
      } catch (const nlohmann::json::exception& e) {
        return invalid(cw + ".function.arguments: not valid JSON (" + e.what() + ")");
      }
    }
  }
  return Status::OK();
}

namespace {
// The flag that sets the video cap an error message names.
std::string video_cap_hint(const std::string& message) {
  if (message.find("per frame, at most") != std::string::npos) return " (--max-image-pixels)";
  if (message.find("frames, at most") != std::string::npos) return " (--max-video-file-frames)";
  if (message.find("lasts more than") != std::string::npos) return " (--max-video-seconds)";
  if (message.find("bytes, at most") != std::string::npos) return " (--max-image-bytes)";
  return "";
}
}  // namespace

Status RequestLayer::attach_images(const std::vector<ImageInput>& images, const std::string& field,
                                   std::vector<int32_t>& prompt, std::vector<MediaEmbeds>& media) const {
  if (!image_encoder_)
    return invalid(field + ": model '" + options_.model_id + "' does not take images");
  if (static_cast<int>(images.size()) > options_.max_images)
    return invalid(field + ": " + std::to_string(images.size()) + " images, at most " +
                   std::to_string(options_.max_images) + " per request (--max-images)");
  size_t total = 0;
  for (const ImageInput& img : images) {
    total += img.data.size();
    for (const ImageInput& f : img.frames) total += f.data.size();
  }
  if (total > options_.max_image_bytes)
    return invalid(field + ": " + std::to_string(total) + " bytes of images, at most " +
                   std::to_string(options_.max_image_bytes) + " per request (--max-image-bytes)");
  // Header first, for every image (and every video frame): an oversized, truncated-header or
  // unknown one is refused before anything is decoded. Qwen2.5-VL: the header's size fixes
  // the image's rows.
  auto probe = [this](const ImageInput& img, image::ImageInfo& info) -> Status {
    const std::string& mime = img.mime_type;
    if (!mime.empty() && mime != "image/jpeg" && mime != "image/png" && mime != "image/jpg")
      return invalid((img.mime_where.empty() ? img.where : img.mime_where) + ": '" + mime +
                     "' (expected image/jpeg or image/png)");
    try {
      const auto* data = reinterpret_cast<const uint8_t*>(img.data.data());
      info = image::probe(std::span<const uint8_t>(data, img.data.size()), options_.image_limits);
    } catch (const Error& e) {
      return invalid(img.where + ": " + e.what());
    }
    return Status::OK();
  };
  std::vector<ImageEncoder::Prepared> image_layouts, video_layouts;
  for (const ImageInput& img : images) {
    if (Status s = check_pixel_range(img); !s.ok()) return s;
    image::ImageInfo info;
    if (!img.video) {
      if (Status s = probe(img, info); !s.ok()) return s;
      try {
        image_layouts.push_back(
            image_encoder_->layout(info.width, info.height, img.min_pixels, img.max_pixels));
      } catch (const Error& e) {
        return invalid(img.where + ": " + e.what());
      }
      continue;
    }
    // A video: frames present, not too many, all of the first frame's size.
    if (!image_encoder_->qwen_processor())
      return invalid(img.where + ": model '" + options_.model_id + "' does not take videos");
    if (img.video_file) {
      // A file: its header, frame count and frame rate (demuxed here, nothing decoded) fix
      // the layout; the decode pool decodes the sampled frames.
      try {
        const auto* data = reinterpret_cast<const uint8_t*>(img.data.data());
        const image::VideoInfo vi =
            image::probe_video(std::span<const uint8_t>(data, img.data.size()), options_.video_limits);
        video_layouts.push_back(image_encoder_->layout_video(vi.frames, vi.fps, vi.width, vi.height,
                                                             img.min_pixels, img.max_pixels));
      } catch (const Error& e) {
        return invalid(img.where + ": " + e.what() + video_cap_hint(e.what()));
      }
      continue;
    }
    if (img.frames.empty()) return invalid(img.where + ": a video needs at least one frame");
    if (static_cast<int>(img.frames.size()) > options_.max_video_frames)
      return invalid(img.where + ": " + std::to_string(img.frames.size()) + " frames, at most " +
                     std::to_string(options_.max_video_frames) + " per video (--max-video-frames)");
    if (!(img.video_fps > 0) || !std::isfinite(img.video_fps) || img.video_fps > 1000)
      return invalid(img.fps_where + ": must be a frame rate in (0, 1000] frames per second");
    image::ImageInfo first;
    for (size_t f = 0; f < img.frames.size(); ++f) {
      if (Status s = probe(img.frames[f], info); !s.ok()) return s;
      if (f == 0) first = info;
      if (info.width != first.width || info.height != first.height)
        return invalid(img.frames[f].where + ": frame of " + std::to_string(info.width) + "x" +
                       std::to_string(info.height) + ", the video's first frame is " +
                       std::to_string(first.width) + "x" + std::to_string(first.height));
    }
    try {
      video_layouts.push_back(image_encoder_->layout_video(static_cast<int>(img.frames.size()),
                                                           img.video_fps, first.width, first.height,
                                                           img.min_pixels, img.max_pixels));
    } catch (const Error& e) {
      return invalid(img.where + ": " + e.what());
    }
  }
  const int32_t token = image_encoder_->image_token_id();
  int placeholders = 0;
  for (int32_t t : prompt) placeholders += t == token;
  if (placeholders != static_cast<int>(image_layouts.size()))
    return invalid(field + ": " + std::to_string(image_layouts.size()) + " images for " +
                   std::to_string(placeholders) + " image placeholder tokens (id " +
                   std::to_string(token) + ") in the prompt");
  if (image_encoder_->qwen_processor()) {
    const int32_t vtoken = image_encoder_->video_token_id();
    int vplaceholders = 0;
    for (int32_t t : prompt) vplaceholders += t == vtoken;
    if (vplaceholders != static_cast<int>(video_layouts.size()))
      return invalid(field + ": " + std::to_string(video_layouts.size()) + " videos for " +
                     std::to_string(vplaceholders) + " video placeholder tokens (id " +
                     std::to_string(vtoken) + ") in the prompt");
    // The spans now (the context checks need the expanded prompt); their pixels come from the
    // decode pool.
    media = expand_media_placeholders(prompt, token, image_layouts, vtoken, video_layouts);
    return Status::OK();
  }
  // The spans now (the context checks need the expanded prompt); their pixels come from the
  // decode pool, and the engine encodes them when the prefill reaches each image (or not at
  // all while the same pixels are in its encoder cache).
  media = expand_image_placeholders(prompt, token, image_encoder_->tokens_per_image(), image_layouts,
                                    image_encoder_->markup());
  return Status::OK();
}

Status RequestLayer::check_pixel_range(const ImageInput& img) const {
  if (img.min_pixels == 0 && img.max_pixels == 0) return Status::OK();
  const image::QwenProcessorConfig* q = image_encoder_->qwen_processor();
  if (!q)
    return invalid(img.pixels_where + ".min_pixels: model '" + options_.model_id +
                   "' resizes every image to one size; min_pixels/max_pixels do not apply");
  const int64_t lo = img.min_pixels > 0 ? img.min_pixels : q->min_pixels;
  const int64_t hi = img.max_pixels > 0 ? img.max_pixels : q->max_pixels;
  const int64_t unit = static_cast<int64_t>(q->factor()) * q->factor();
  if (hi > q->max_pixels)
    return invalid(img.pixels_where + ".max_pixels: " + std::to_string(hi) +
                   " exceeds the server's limit of " + std::to_string(q->max_pixels));
  if (lo < unit)
    return invalid(img.pixels_where + ".min_pixels: " + std::to_string(lo) +
                   " is below one merged patch (" + std::to_string(unit) + " pixels)");
  if (lo > hi)
    return invalid(img.pixels_where + ".min_pixels: " + std::to_string(lo) + " exceeds max_pixels " +
                   std::to_string(hi));
  return Status::OK();
}

Status RequestLayer::decode_images(const std::vector<ImageInput>& images, EngineRequest& request) const {
  // media[i] is images[i]'s span when the prompt holds only images; with videos (Qwen2.5-VL)
  // the spans are in prompt order, images and videos each in their own order.
  std::vector<size_t> span_of(images.size());
  {
    // (A span's first token is the video token for a video; for an image it is the image
    // token, or with a markup such as Gemma 3's, the markup's fill token.)
    const int32_t video_token = image_encoder_->video_token_id();
    std::vector<size_t> image_spans, video_spans;
    for (size_t k = 0; k < request.media.size(); ++k)
      (video_token >= 0 &&
               request.prompt.at(static_cast<size_t>(request.media[k].position)) == video_token
           ? video_spans
           : image_spans)
          .push_back(k);
    size_t ii = 0, vi = 0;
    for (size_t i = 0; i < images.size(); ++i)
      span_of[i] = images[i].video ? video_spans.at(vi++) : image_spans.at(ii++);
  }
  for (size_t i = 0; i < images.size(); ++i) {
    MediaEmbeds& span = request.media.at(span_of[i]);
    try {
      ImageEncoder::Prepared p;
      if (images[i].video_file) {
        const auto* data = reinterpret_cast<const uint8_t*>(images[i].data.data());
        p = image_encoder_->prepare_video_file(std::span<const uint8_t>(data, images[i].data.size()),
                                               options_.video_limits, images[i].min_pixels,
                                               images[i].max_pixels);
      } else if (images[i].video) {
        std::vector<std::span<const uint8_t>> frames;
        for (const ImageInput& f : images[i].frames)
          frames.emplace_back(reinterpret_cast<const uint8_t*>(f.data.data()), f.data.size());
        p = image_encoder_->prepare_video(frames, images[i].video_fps, options_.image_limits,
                                          images[i].min_pixels, images[i].max_pixels);
      } else {
        const auto* data = reinterpret_cast<const uint8_t*>(images[i].data.data());
        p = image_encoder_->prepare(std::span<const uint8_t>(data, images[i].data.size()),
                                    options_.image_limits, images[i].min_pixels,
                                    images[i].max_pixels);
      }
      if (metrics_) metrics_->on_image_prepared(p.decode_seconds, p.preprocess_seconds);
      if (p.tokens > 0 && p.tokens != span.length)
        return invalid(images[i].where + ": the decoded media has " + std::to_string(p.tokens) +
                       " rows, its header promised " + std::to_string(span.length));
      span.encoder_input = p.patches;
      span.content_hash = p.cache_key();
    } catch (const Error& e) {
      return invalid(images[i].where + ": " + e.what());
    }
  }
  return Status::OK();
}

Status RequestLayer::start(PreparedRequest request, std::shared_ptr<OutputSink> sink) {
  if (draining_.load()) return Status(Code::kUnavailable, "the server is shutting down");
  const int decoding = decode_pool_ ? decode_pool_->pending() : 0;
  if (options_.max_queue > 0 && engine_.num_queued() + decoding >= options_.max_queue)
    return Status(Code::kResourceExhausted, "the waiting queue is full (--max-queue " +
                                                std::to_string(options_.max_queue) + "); retry later");
  auto submit = [this](EngineRequest er, std::shared_ptr<OutputSink> sink) {
    engine_.submit(std::move(er), [sink](const EngineOutput& out) { sink->on_output(out); });
  };
  if (request.pending_images.empty()) {
    submit(std::move(request.engine), std::move(sink));
    return Status::OK();
  }
  // Images: decoded on the pool, then submitted, unless the client left meanwhile.
  decode_pool_->post([this, submit, sink = std::move(sink), request = std::move(request)]() mutable {
    const Status s = decode_images(request.pending_images, request.engine);
    if (!sink->wants_submission()) return;
    if (!s.ok()) {
      EngineOutput out;
      out.id = request.engine.id;
      out.error = s.message;
      sink->on_output(out);
      return;
    }
    submit(std::move(request.engine), std::move(sink));
  });
  return Status::OK();
}

Status RequestLayer::tokenize(const std::string& text, bool add_special_tokens,
                              std::vector<int32_t>& out) const {
  if (!tokenizer_) return Status(Code::kFailedPrecondition, "this model has no tokenizer.json");
  out = tokenizer_->encode(text, add_special_tokens);
  return Status::OK();
}

Status RequestLayer::detokenize(const std::vector<int64_t>& ids, bool skip_special_tokens,
                                std::string& out) const {
  if (!tokenizer_) return Status(Code::kFailedPrecondition, "this model has no tokenizer.json");
  std::vector<int32_t> v;
  v.reserve(ids.size());
  for (int64_t t : ids) {
    if (t < 0 || t >= tokenizer_->vocab_size())
      return invalid("token_ids: id " + std::to_string(t) + " is outside the vocabulary [0, " +
                     std::to_string(tokenizer_->vocab_size()) + ")");
    v.push_back(static_cast<int32_t>(t));
  }
  out = tokenizer_->decode_like_transformers(v, skip_special_tokens);
  return Status::OK();
}

std::string RequestLayer::token_text(int32_t id) const {
  if (!tokenizer_) return "token_id:" + std::to_string(id);
  return tokenizer_->decode({id}, /*skip_special_tokens=*/false);
}

}  // namespace iris::server
