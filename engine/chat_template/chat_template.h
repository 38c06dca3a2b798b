// Renders a model's chat template (the `chat_template` of tokenizer_config.json) the way
// transformers' apply_chat_template does: jinja2 with trim_blocks/lstrip_blocks, the
// raise_exception and strftime_now globals, `messages`, `add_generation_prompt`, `tools` and
// `documents` (None unless given), and every special token string as a variable.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/chat_template/jinja.h"

namespace iris {

// One part of a message whose content is a list, as vision chat templates take it:
// {"type": "text", "text": ...} or {"type": "image"} (the template writes the image's
// placeholder; the image itself travels beside the prompt).
struct ChatContentPart {
  enum class Kind { kText, kImage, kVideo };  // kVideo: {"type": "video"} (Qwen2.5-VL)
  Kind kind = Kind::kText;
  std::string text;  // kText only
};

struct ChatMessage {
  std::string role;
  std::string content;
  // Other fields (tool_calls, tool_call_id, name, ...) passed through as JSON, in the client's
  // key order (a template's `tojson` output depends on it, as it does in transformers).
  nlohmann::ordered_json extra;
  // With `as_parts`, the template sees `content` as this list of parts instead of a string.
  bool as_parts = false;
  std::vector<ChatContentPart> parts{};
  // The client sent no content (an assistant turn with only tool_calls): the template sees None.
  bool null_content = false;

  nlohmann::ordered_json to_json() const;
};

class ChatTemplate {
 public:
  // Picks `chat_template` from a parsed tokenizer_config.json: a string, or a list of
  // {name, template} where `name` selects one ("" means "default"). Special tokens (strings
  // or AddedToken objects with "content") become variables. Throws iris::Error.
  static std::unique_ptr<ChatTemplate> from_tokenizer_config(const nlohmann::json& tokenizer_config,
                                                             const std::string& name = "");
  // special_tokens: {"bos_token": "<s>", ...}; every key becomes a template variable.
  static std::unique_ptr<ChatTemplate> from_string(const std::string& tmpl,
                                                   nlohmann::json special_tokens = nlohmann::json::object());

  // messages: a JSON array of message objects (content may be a string or a list of parts).
  // extra_context: more variables (tools, documents, enable_thinking, date_string...).
  // nlohmann::json sorts object keys; the ordered_json overload keeps the caller's key order,
  // which `tojson` output depends on (transformers keeps Python dict order).
  std::string render(const nlohmann::json& messages, bool add_generation_prompt,
                     const nlohmann::json& extra_context = {}) const;
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra_context) const;
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const nlohmann::ordered_json& extra_context = {}) const;

  void set_limits(const jinja::RenderLimits& limits) { limits_ = limits; }
  // The clock behind strftime_now (tests pin it); defaults to the current local time.
  void set_clock(std::function<std::time_t()> clock) { clock_ = std::move(clock); }
  const std::string& source() const { return source_; }
  // The template loops over a message's content (`for part in message['content']`), i.e. it
  // expects content as a list of parts, as vision-language templates do.
  bool iterates_content() const;

 private:
  ChatTemplate(std::string source, nlohmann::json special_tokens);
  std::string render_values(jinja::Value messages, bool add_generation_prompt, jinja::Variables extra) const;

  std::string source_;
  jinja::Template template_;
  nlohmann::json special_tokens_;
  jinja::RenderLimits limits_;
  std::function<std::time_t()> clock_;
};

}  // namespace iris
