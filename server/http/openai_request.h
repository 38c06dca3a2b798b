// Reading an OpenAI-style request body into the request layer's GenerationInput: typed field
// access where null or absent means unset and a wrong type throws BadField naming the field
// (the caller answers 400), the sampling fields both endpoints share, the output constraint
// (response_format, structured_outputs, guided_*), chat messages with text and image_url
// parts, and data: URLs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/request/request_layer.h"

namespace iris::server::http::openai {

using nlohmann::json;

// A field of the request body with the wrong type or value; becomes a 400 naming it.
struct BadField {
  std::string message;
};
[[noreturn]] void bad(std::string msg);

// The field, or nullptr when absent or null.
const json* field(const json& obj, const char* key);
std::optional<double> opt_number(const json& obj, const char* key);
std::optional<int64_t> opt_int(const json& obj, const char* key);  // integral floats accepted
std::optional<bool> opt_bool(const json& obj, const char* key);
std::optional<std::string> opt_string(const json& obj, const char* key);
std::vector<int64_t> int_list(const json& v, const std::string& where);

// The sampling and stopping fields of chat (max_completion_tokens too) and completions.
SamplingFields sampling_fields(const json& b, bool chat);
// Sets in.constraint (and its field name) from whichever constraint field the body has; at
// most one.
void structured_output(const json& b, GenerationInput& in);
// tools, tool_choice and parallel_tool_calls (from the ordered body: templates print tools).
void tool_fields(const nlohmann::ordered_json& ordered, GenerationInput& in);
// A base64 data: URL's bytes and mime type.
ImageInput data_url_image(const std::string& url, const std::string& where);
// `messages` → the request layer's messages. http(s) image URLs must name a host in `allowed`
// (else BadField, before any connection); each is listed in `remote` (url) and `remote_at`
// (message, part) for the caller to fetch. `ordered`: the same body parsed with its key order
// kept, for the fields that reach the chat template (tool_calls, ...).
std::vector<ChatInputMessage> chat_messages(const json& body, const nlohmann::ordered_json& ordered,
                                            const std::vector<std::string>& allowed,
                                            std::vector<std::pair<size_t, std::string>>& remote,
                                            std::vector<std::pair<size_t, size_t>>& remote_at);

}  // namespace iris::server::http::openai
