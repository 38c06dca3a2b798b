// A chat request's prompt: the messages rendered by the model's chat template and tokenized
// so that the template's markup may produce special tokens but the messages' text never
// does — a user who types "<|eot_id|>" gets the tokens of that text, not an end of turn.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/chat_template/chat_template.h"
#include "engine/tokenizer/tokenizer.h"

namespace iris {

struct ChatPrompt {
  std::string text;           // the rendered prompt
  std::vector<int32_t> ids;   // its tokens (no BOS added beyond what the template writes)
  bool contents_located = false;  // message texts were found verbatim in `text`
};

// Renders and tokenizes. Throws iris::Error (a template error, or a message whose text spells
// a special token when the template does not copy message text verbatim, so the text could
// not be kept apart from the markup). `extra_context`: more template variables (a request's
// chat_template_kwargs, e.g. enable_thinking).
ChatPrompt build_chat_prompt(const ChatTemplate& tmpl, const Tokenizer& tokenizer,
                             const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                             const nlohmann::ordered_json& extra_context = {});

}  // namespace iris
