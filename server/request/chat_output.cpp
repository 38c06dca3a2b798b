// Reasoning and tool calls out of a chat choice's text. See chat_output.h.
#include "server/request/chat_output.h"

namespace iris::server {

ChatResult parse_chat_output(const ChatOutputFormat& format, std::string_view text) {
  ChatResult r;
  std::string rest(text);
  if (format.reasoning != tools::ReasoningSyntax::kNone) {
    tools::ReasoningSplit split = tools::split_reasoning(format.reasoning, rest);
    r.has_reasoning = split.has_reasoning;
    r.reasoning = std::move(split.reasoning);
    rest = std::move(split.content);
  }
  if (format.tool_syntax == tools::ToolSyntax::kNone) {
    r.content = std::move(rest);
    return r;
  }
  const std::string marker = format.marker_prefilled ? std::string(tools::call_marker(format.tool_syntax)) : "";
  tools::ParsedOutput p = tools::parse_tool_calls(format.tool_syntax, marker + rest, format.drop);
  r.calls = std::move(p.calls);
  r.content = r.calls.empty() && !marker.empty() ? p.content.substr(std::min(marker.size(), p.content.size()))
                                                 : std::move(p.content);
  return r;
}

std::string chat_finish_reason(const std::string& engine_reason, bool has_calls) {
  return has_calls && engine_reason == "stop" ? "tool_calls" : engine_reason;
}

ChatOutputStream::ChatOutputStream(const ChatOutputFormat& format)
    : format_(format), reasoning_(format.reasoning), tools_(format.tool_syntax, format.drop) {
  if (format_.marker_prefilled) tools_.feed(tools::call_marker(format_.tool_syntax));
}

void ChatOutputStream::content(Delta& d, std::string_view text, bool final) {
  tools::StreamDelta t = tools_.feed(text);
  d.content += t.content;
  for (auto& c : t.calls) d.calls.push_back(std::move(c));
  if (!final) return;
  t = tools_.finish();
  d.content += t.content;
  for (auto& c : t.calls) d.calls.push_back(std::move(c));
}

ChatOutputStream::Delta ChatOutputStream::feed(std::string_view text) {
  Delta d;
  auto r = reasoning_.feed(text);
  d.reasoning = std::move(r.reasoning);
  content(d, r.content, false);
  return d;
}

ChatOutputStream::Delta ChatOutputStream::finish() {
  Delta d;
  auto r = reasoning_.finish();
  d.reasoning = std::move(r.reasoning);
  content(d, r.content, true);
  return d;
}

}  // namespace iris::server
