// The protocol-neutral request layer: every rule of a generation request lives here once —
// authentication, the model check, validation that names the field, defaults from
// generation_config.json, chat-prompt rendering, image checks and decoding, admission (queue
// bound, draining), submission to the engine, the per-request log line — and both front doors
// (server/grpc, server/http) only translate their wire formats to a GenerationInput and the
// engine's outputs back. A rule written in one front door only is a bug.
//
// Threads: prepare() and start() run on the caller's (gRPC callback or HTTP I/O) thread and
// never block; images are decoded on the decode pool; outputs reach the Sink on the engine
// thread (or on a decode-pool thread when an image fails to decode).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template/chat_template.h"
#include "engine/engine.h"
#include "engine/grammar/constraint.h"
#include "engine/image_encoder.h"
#include "engine/loader/model_config.h"
#include "engine/image/video_decode.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/request/chat_output.h"
#include "server/request/decode_pool.h"
#include "server/metrics/server_metrics.h"
#include "server/request/status.h"

namespace iris::server {

struct ServiceOptions {
  std::string model_id;  // the served model's name (its directory's basename)
  std::string api_key;   // empty = no authentication
  int max_queue = 0;     // sequences waiting for a slot at most (0 = unlimited)
  int max_n = 16;        // choices per request at most
  int max_stop = 16;     // stop strings per request at most
  int max_stop_bytes = 256;
  int max_logit_bias = 300;  // logit_bias entries per request at most (OpenAI's cap)
  int max_images = 8;  // images per request at most
  size_t max_image_bytes = 32u << 20;  // encoded image bytes per request at most
  int max_video_frames = 768;  // frames given per video at most (Qwen2.5-VL)
  // Video files (Qwen2.5-VL): frames the file holds, duration, pixels per frame (the latter
  // set from image_limits.max_pixels), bytes.
  image::VideoLimits video_limits;
  int image_decode_threads = 2;         // workers that decode and preprocess images
  double max_constraint_compile_ms = 5000;  // structured-output compile time cap (0 = none)
  image::DecodeLimits image_limits;
  // Output a stream may hold unsent because its client does not read; past it the request is
  // aborted (with a log line) so one slow reader never grows the server's memory.
  size_t max_pending_output_bytes = 4u << 20;
  bool log_prompts = false;  // put prompt text in the request log line (off: counts only)
  // Tool-call syntax: "auto" (from the chat template, tokens and model type), or a name of
  // tools::tool_syntax_from_name ("llama3_json", "hermes", "mistral", "none").
  std::string tool_call_parser = "auto";
  // Reasoning split of chat outputs: "none", "qwen3" or "deepseek_r1".
  std::string reasoning_parser = "none";
  std::string version;
};

// Constant-time check of `authorization: Bearer <key>` against `key`.
bool bearer_matches(std::string_view authorization, const std::string& key);

// An image as a request carries it: encoded bytes, the declared type, and where it sits in the
// request (for errors), e.g. "messages[0].content[1].image_url".
struct ImageInput {
  std::string data;
  std::string mime_type;  // "" = sniff
  std::string where;
  std::string mime_where;  // the mime type's field, when the API has one of its own
  // A video (Qwen2.5-VL) instead of an image: its frames in order (each an encoded JPEG/PNG
  // with its own `where`), shot at video_fps frames per second; `data` is unused. Or, with
  // video_file, `data` is a video file (MP4, WebM/Matroska, AVI) and `frames` is empty.
  bool video = false;
  bool video_file = false;
  std::vector<ImageInput> frames;
  double video_fps = 0;
  std::string fps_where;
  // Qwen2.5-VL: this item's resized-area range (0 = the processor's), and its field's prefix.
  int64_t min_pixels = 0, max_pixels = 0;
  std::string pixels_where;
};

struct ChatInputPart {
  enum class Kind { kText, kImage, kVideo };
  Kind kind = Kind::kText;
  std::string text;
  ImageInput image;  // kImage, kVideo (image.video set)
};

struct ChatInputMessage {
  std::string role;
  std::vector<ChatInputPart> parts;
  bool content_is_list = false;  // the client sent a list of parts (not one string)
  bool content_null = false;     // no content at all (an assistant turn with only tool_calls)
  // name, tool_calls (OpenAI's shape: arguments as a JSON string), tool_call_id, ... in the
  // client's key order.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

// The sampling and stopping fields of both APIs. Unset optionals take generation_config.json's
// defaults (or the engine's).
struct SamplingFields {
  std::optional<int64_t> max_tokens;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int64_t> stop_token_ids;
  std::optional<int64_t> n;
  bool ignore_eos = false;
  int64_t min_tokens = 0;
  double presence_penalty = 0, frequency_penalty = 0;
  std::optional<int64_t> logprobs;  // set = return logprobs; N = also the N most likely
  std::optional<bool> skip_special_tokens;
  std::vector<std::pair<int64_t, double>> logit_bias;  // token id -> bias in [-100, 100]
};

// One generation request, whatever front door it came through. Exactly one prompt kind is set.
struct GenerationInput {
  const char* api = "grpc";  // "grpc" | "http", for the log line
  const char* rpc = "generate";
  std::string model;
  std::optional<std::string> text;                   // tokenized with special tokens added
  std::optional<std::vector<int64_t>> token_ids;
  std::optional<std::vector<ChatInputMessage>> messages;  // rendered with the chat template
  std::vector<ImageInput> images;  // with text / token_ids: one per placeholder token
  bool add_generation_prompt = true;
  nlohmann::json chat_template_kwargs = nlohmann::json::object();
  // Tool calling (chat): OpenAI's `tools` ([{type: "function", function: {name, description,
  // parameters}}], key order kept: templates print them) and `tool_choice` ("none", "auto",
  // "required" or {type: "function", function: {name}}); null = unset.
  nlohmann::ordered_json tools;
  nlohmann::ordered_json tool_choice;
  bool parallel_tool_calls = true;
  SamplingFields sampling;
  std::string user;        // logged
  std::string request_id;  // the client's (x-request-id); logged and echoed; else the engine id
  std::string client;      // the peer address, logged
  // Structured output: the output must match this constraint (JSON Schema, any JSON object,
  // regex, choice, GBNF); `constraint_field` names the request field for errors.
  std::optional<grammar::Constraint> constraint;
  std::string constraint_field = "structured_output";
  // Field names as the client's API spells them, for errors ("max_tokens" vs
  // "max_completion_tokens", "text" vs "prompt").
  std::string prompt_field = "prompt";
};

// A validated request, ready to start.
struct PreparedRequest {
  std::chrono::steady_clock::time_point arrival = std::chrono::steady_clock::now();
  metrics::ServerMetrics* metrics = nullptr;
  EngineRequest engine;
  const char* api = "grpc";
  const char* rpc = "generate";
  std::string user;
  std::string request_id;  // what the client sees and the log line carries
  std::string client;
  std::string prompt_text;  // for the log line, only with ServiceOptions::log_prompts
  bool want_logprobs = false;
  // Chat: how the output text becomes content, reasoning_content and tool calls.
  ChatOutputFormat chat_output;
  // Images accepted on their headers, decoded on the pool before submission: one per media
  // span, in order. Empty when the request has none.
  std::vector<ImageInput> pending_images;
};

// Receives one request's outputs. Called on the engine thread (on_output) or a decode-pool
// thread (on_output with `error` set, when an image fails to decode); never concurrently for
// one request. `wants_submission` is asked right before the request goes to the engine, so a
// request whose client left while its images decoded never runs.
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void on_output(const EngineOutput& out) = 0;
  virtual bool wants_submission() { return true; }
};

// Per-request accounting shared by both front doors: completion tokens and finish reason per
// choice, time to first token, the request's metrics (tokens, inter-token gaps, one record per
// finished choice) and the one log line per finished request.
class RequestRecord {
 public:
  RequestRecord(const PreparedRequest& r);
  // Updates the counts from an output (any thread, one at a time). True when `out` finished
  // its choice (an abort included). An error output finishes every open choice with
  // finish_reason "error".
  bool observe(const EngineOutput& out);
  bool all_finished() const { return finished_ == n_; }
  int n() const { return n_; }
  int prompt_tokens() const { return prompt_tokens_; }
  int completion_tokens(int i) const { return completion_tokens_[i]; }
  int total_completion_tokens() const;
  const std::string& finish_reason(int i) const { return finish_reasons_[i]; }
  // The request's log line (status: "ok" or the error's code name).
  void log_done(std::string_view status, std::string_view error = {}) const;

 private:
  void finished_metrics(int index, FinishReason reason, const EngineOutput& out);

  metrics::ServerMetrics* metrics_;
  std::vector<metrics::TokenClock> clocks_;
  std::string id_;
  std::string request_id_, client_, prompt_text_;
  std::optional<RequestTiming> timing_;  // of the last choice that finished
  const char* api_;
  const char* rpc_;
  std::string user_;
  int n_ = 1;
  int prompt_tokens_ = 0;
  int finished_ = 0;
  std::vector<int> completion_tokens_;
  std::vector<std::string> finish_reasons_;
  std::chrono::steady_clock::time_point start_, first_token_;
  bool any_tokens_ = false;
};

class RequestLayer {
 public:
  // tokenizer and chat_template may be null (token-id-only model; no chat).
  RequestLayer(Engine& engine, const ModelConfig& config, const Tokenizer* tokenizer,
               const ChatTemplate* chat_template, ServiceOptions options);
  ~RequestLayer();

  // A vision-language model's image encoder: images are checked on their headers by prepare(),
  // decoded and preprocessed on the decode pool, encoded by the engine. Call before serving.
  void set_image_encoder(ImageEncoder* encoder);

  // Metrics of every request (not owned; may be null). Call before serving.
  void set_metrics(metrics::ServerMetrics* m) { metrics_ = m; }
  metrics::ServerMetrics* metrics() const { return metrics_; }
  // A request refused before it reached the engine: counted by reason and front door, and
  // logged. `api` is "grpc" or "http"; `what` names the endpoint or RPC.
  void rejected(const Status& s, const char* api, const char* what) const;

  // OK, or kUnauthenticated when an API key is configured and `authorization` (the value of
  // the authorization header / metadata, nullopt when absent) does not carry it.
  Status authenticate(std::optional<std::string_view> authorization) const;
  // kNotFound unless `model` is empty or the served model.
  Status check_model(const std::string& model) const;

  // Validates everything and builds the engine request; a non-OK status names the field.
  Status prepare(const GenerationInput& in, PreparedRequest& out) const;
  // Admission (draining → kUnavailable, queue bound → kResourceExhausted), then submission
  // (after decoding images on the pool). On OK, the sink gets every output of the request.
  Status start(PreparedRequest request, std::shared_ptr<OutputSink> sink);
  // Thread-safe; the request ends with finish_reason abort within one engine step.
  void abort(const std::string& request_id) { engine_.abort(request_id); }

  // Token ids of `text` (with special tokens when asked).
  Status tokenize(const std::string& text, bool add_special_tokens, std::vector<int32_t>& out) const;
  // A chat request's prompt ids (the messages rendered with the chat template); `images` gets
  // the image parts in order.
  Status chat_prompt(const GenerationInput& in, std::vector<int32_t>& prompt,
                     std::vector<ImageInput>& images) const;
  // Text of `ids` as transformers' decode gives it (clean_up_tokenization_spaces honoured).
  Status detokenize(const std::vector<int64_t>& ids, bool skip_special_tokens, std::string& out) const;
  // The text of one token, as logprobs report it.
  std::string token_text(int32_t id) const;

  // While draining, new requests get kUnavailable; requests in flight continue.
  void set_draining(bool draining) { draining_.store(draining); }
  bool draining() const { return draining_.load(); }
  // Requests started and not yet finished by their front door (see stream_opened/closed).
  int active_streams() const { return active_.load(); }
  void stream_opened() { active_.fetch_add(1); }
  void stream_closed() { active_.fetch_sub(1); }

  Engine& engine() { return engine_; }
  const Engine& engine() const { return engine_; }
  const ModelConfig& config() const { return config_; }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  const ChatTemplate* chat_template() const { return chat_template_; }
  const ServiceOptions& options() const { return options_; }
  tools::ToolSyntax tool_syntax() const { return tool_syntax_; }
  bool takes_images() const { return image_encoder_ != nullptr; }
  std::string next_request_id() const;

 private:
  Status sampling_params(const SamplingFields& in, size_t prompt_len, SamplingParams& p, int& n) const;
  // Checks the images (count, bytes, header, placeholder count) and expands the prompt's
  // placeholders into media spans whose pixels the decode pool provides.
  Status attach_images(const std::vector<ImageInput>& images, const std::string& field,
                       std::vector<int32_t>& prompt, std::vector<MediaEmbeds>& media) const;
  // Qwen2.5-VL's per-item min_pixels/max_pixels: within the processor's range.
  Status check_pixel_range(const ImageInput& img) const;
  Status decode_images(const std::vector<ImageInput>& images, EngineRequest& request) const;
  // Validates tools / tool_choice and the tool_calls of history messages.
  struct ToolPlan;
  Status tool_plan(const GenerationInput& in, ToolPlan& plan) const;
  Status history_tool_calls(nlohmann::ordered_json& extra, const std::string& where) const;
  Status chat_prompt(const GenerationInput& in, std::vector<int32_t>& prompt,
                     std::vector<ImageInput>& images, ToolPlan* plan) const;
  // The chat output's parsing, and for tool_choice required / a named function the constraint
  // (and the call marker appended to the prompt when it is a special token).
  Status chat_output_format(const ToolPlan& plan, const GenerationInput& in, std::vector<int32_t>& prompt,
                            ChatOutputFormat& format,
                            std::shared_ptr<const grammar::CompiledConstraint>& constraint,
                            bool& keep_special_tokens) const;

  Engine& engine_;
  const ModelConfig& config_;
  const Tokenizer* tokenizer_;
  const ChatTemplate* chat_template_;
  ImageEncoder* image_encoder_ = nullptr;
  metrics::ServerMetrics* metrics_ = nullptr;
  // Compiled constraints by (kind, text), for this model's vocabulary; null without a tokenizer.
  std::unique_ptr<grammar::ConstraintCache> constraints_;
  ServiceOptions options_;
  tools::ToolSyntax tool_syntax_ = tools::ToolSyntax::kNone;
  tools::ReasoningSyntax reasoning_ = tools::ReasoningSyntax::kNone;
  std::atomic<int> active_{0};
  std::atomic<bool> draining_{false};
  mutable std::atomic<uint64_t> next_id_{0};
  // Last member: destroyed first, finishing its jobs while the rest still exists.
  std::unique_ptr<DecodePool> decode_pool_;
};

}  // namespace iris::server
