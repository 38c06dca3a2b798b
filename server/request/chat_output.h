// How a chat request's generated text becomes an assistant message: reasoning
// (`<think>…</think>` → reasoning_content) and tool calls in the model family's syntax, whole
// (non-streamed responses) or delta by delta (streams). Protocol-neutral: the HTTP and gRPC
// front doors shape the pieces into their own messages.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/tool_calls/tool_calls.h"

namespace iris::server {

// Decided per request by the request layer (RequestLayer::prepare).
struct ChatOutputFormat {
  tools::ToolSyntax tool_syntax = tools::ToolSyntax::kNone;  // kNone: no tool-call parsing
  // The call marker was appended to the prompt (tool_choice required/named with a marker the
  // tokenizer treats as special): the output starts inside the call.
  bool marker_prefilled = false;
  tools::ReasoningSyntax reasoning = tools::ReasoningSyntax::kNone;
  // Text removed before parsing: EOS token strings, when special tokens are kept in the text
  // so that a special call marker stays visible.
  std::vector<std::string> drop;
  bool active() const {
    return tool_syntax != tools::ToolSyntax::kNone || reasoning != tools::ReasoningSyntax::kNone;
  }
};

// A finished choice's message.
struct ChatResult {
  std::string content;
  std::string reasoning;
  bool has_reasoning = false;
  std::vector<tools::ToolCall> calls;
};
ChatResult parse_chat_output(const ChatOutputFormat& format, std::string_view text);

// "tool_calls" for a choice that stopped normally with calls; otherwise the engine's reason.
std::string chat_finish_reason(const std::string& engine_reason, bool has_calls);

// One choice's stream.
class ChatOutputStream {
 public:
  explicit ChatOutputStream(const ChatOutputFormat& format);
  struct Delta {
    std::string reasoning, content;
    std::vector<tools::ToolCallDelta> calls;
    bool empty() const { return reasoning.empty() && content.empty() && calls.empty(); }
  };
  Delta feed(std::string_view text);
  Delta finish();
  int num_calls() const { return tools_.num_calls(); }

 private:
  void content(Delta& d, std::string_view text, bool final);
  ChatOutputFormat format_;
  tools::ReasoningStreamParser reasoning_;
  tools::ToolCallStreamParser tools_;
};

}  // namespace iris::server
