// Locating message text in the rendered prompt: render once with a unique marker in place of
// each message's content and once with the real contents. When substituting the contents
// for the markers reproduces the real rendering exactly, the contents' byte ranges are
// known, and the tokenizer parses special tokens everywhere but there.
#include "engine/chat_template/chat_prompt.h"

#include <utility>

#include "engine/core/check.h"

namespace iris {
namespace {

// U+FFF9 (interlinear annotation anchor) brackets: never produced by templates, and a
// message that contains one simply takes the fallback path.
std::string marker(size_t i) { return "\xEF\xBF\xB9" "iris-content-" + std::to_string(i) + "\xEF\xBF\xBB"; }

}  // namespace

ChatPrompt build_chat_prompt(const ChatTemplate& tmpl, const Tokenizer& tokenizer,
                             const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  ChatPrompt out;
  out.text = tmpl.render(messages, add_generation_prompt);

  bool markers_usable = true;
  for (const auto& m : messages)
    if (m.content.find("\xEF\xBF\xB9") != std::string::npos) markers_usable = false;
  std::vector<std::pair<size_t, size_t>> ranges;
  if (markers_usable) {
    std::vector<ChatMessage> marked = messages;
    for (size_t i = 0; i < marked.size(); ++i) marked[i].content = marker(i);
    std::string with_markers;
    try {
      with_markers = tmpl.render(marked, add_generation_prompt);
    } catch (const Error&) {
      markers_usable = false;  // e.g. a template that inspects the content
    }
    if (markers_usable) {
      // Rebuild the real rendering from the marked one, recording where each content lands.
      std::string rebuilt;
      size_t pos = 0;
      while (pos < with_markers.size()) {
        const size_t at = with_markers.find("\xEF\xBF\xB9" "iris-content-", pos);
        if (at == std::string::npos) {
          rebuilt.append(with_markers, pos, std::string::npos);
          break;
        }
        const size_t close = with_markers.find("\xEF\xBF\xBB", at);
        if (close == std::string::npos) {
          markers_usable = false;
          break;
        }
        rebuilt.append(with_markers, pos, at - pos);
        const std::string num = with_markers.substr(at + 16, close - (at + 16));
        size_t idx = 0;
        try {
          idx = std::stoul(num);
        } catch (const std::exception&) {
          markers_usable = false;
          break;
        }
        if (idx >= messages.size()) {
          markers_usable = false;
          break;
        }
        ranges.emplace_back(rebuilt.size(), rebuilt.size() + messages[idx].content.size());
        rebuilt += messages[idx].content;
        pos = close + 3;
      }
      if (rebuilt != out.text) markers_usable = false;
    }
  }
  if (markers_usable) {
    out.contents_located = true;
    out.ids = tokenizer.encode_with_literals(out.text, /*add_special_tokens=*/false, ranges);
    return out;
  }
  // The template transforms message text (trims, escapes, ...): tokenize the rendering as a
  // whole, which is only safe when no message spells a special token.
  for (size_t i = 0; i < messages.size(); ++i)
    if (tokenizer.contains_special_token(messages[i].content))
      fail("messages[", i, "].content spells a special token, and this chat template does not copy "
           "message text verbatim, so it cannot be kept as text");
  out.ids = tokenizer.encode(out.text, /*add_special_tokens=*/false);
  return out;
}

}  // namespace iris
