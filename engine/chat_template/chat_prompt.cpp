// Locating message text in the rendered prompt: render once with a unique marker in place of
// each message's content and once with the real contents. When substituting the contents
// for the markers reproduces the real rendering exactly, the contents' byte ranges are
// known, and the tokenizer parses special tokens everywhere but there.
#include "engine/chat_template/chat_prompt.h"

#include <span>
#include <utility>

#include "engine/core/check.h"

namespace iris {
namespace {

// U+FFF9 (interlinear annotation anchor) brackets: never produced by templates, and a
// message that contains one simply takes the fallback path.
std::string marker(size_t i) { return "\xEF\xBF\xB9" "iris-content-" + std::to_string(i) + "\xEF\xBF\xBB"; }

// Every piece of message text, in order: a string content, or each text part of a list.
template <class Messages, class Fn>
void for_each_text(Messages&& messages, Fn fn) {
  for (auto& m : messages) {
    if (!m.as_parts) {
      fn(m.content);
      continue;
    }
    for (auto& p : m.parts)
      if (p.kind == ChatContentPart::Kind::kText) fn(p.text);
  }
}

}  // namespace

ChatPrompt build_chat_prompt(const ChatTemplate& tmpl, const Tokenizer& tokenizer,
                             const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                             const nlohmann::ordered_json& extra_context) {
  ChatPrompt out;
  out.text = tmpl.render(messages, add_generation_prompt, extra_context);

  std::vector<const std::string*> texts;
  for_each_text(messages, [&](const std::string& t) { texts.push_back(&t); });
  bool markers_usable = true;
  for (const std::string* t : texts)
    if (t->find("\xEF\xBF\xB9") != std::string::npos) markers_usable = false;
  std::vector<std::pair<size_t, size_t>> ranges;
  if (markers_usable) {
    std::vector<ChatMessage> marked = messages;
    size_t k = 0;
    for_each_text(marked, [&](std::string& t) { t = marker(k++); });
    std::string with_markers;
    try {
      with_markers = tmpl.render(marked, add_generation_prompt, extra_context);
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
        if (idx >= texts.size()) {
          markers_usable = false;
          break;
        }
        ranges.emplace_back(rebuilt.size(), rebuilt.size() + texts[idx]->size());
        rebuilt += *texts[idx];
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
  for (size_t i = 0; i < messages.size(); ++i) {
    bool spells = false;
    for_each_text(std::span<const ChatMessage>(&messages[i], 1),
                  [&](const std::string& t) { spells = spells || tokenizer.contains_special_token(t); });
    if (spells)
      fail("messages[", i, "].content spells a special token, and this chat template does not copy "
           "message text verbatim, so it cannot be kept as text");
  }
  out.ids = tokenizer.encode(out.text, /*add_special_tokens=*/false);
  return out;
}

}  // namespace iris
