// Tool calls in a model family's own syntax: which syntax a model writes, reading calls out of
// generated text (whole, or streamed delta by delta with partial markers held back), and the
// output constraint that makes a model write a valid call (OpenAI's tool_choice "required" or
// a named function). Also the reasoning split (`<think>…</think>` → reasoning_content).
//
// Syntaxes (what the model writes after the assistant header):
//   llama3_json  {"name": "f", "parameters": {...}}            (Llama 3.1/3.2/3.3; an optional
//                <|python_tag|> first; several calls separated by ';')
//   hermes       <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>   (Qwen2.5, Qwen3,
//                Hermes; any number of blocks, with text around them)
//   mistral      [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]  (Mistral 7B v0.3, Nemo,
//                Small; text before the marker is content)
// Pure C++ (no protocol types): both front doors use it through server/request.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/grammar/constraint.h"

namespace iris::tools {

enum class ToolSyntax { kNone, kLlama3Json, kHermes, kMistral };

const char* tool_syntax_name(ToolSyntax s);  // "none", "llama3_json", "hermes", "mistral"
std::optional<ToolSyntax> tool_syntax_from_name(std::string_view name);

// The syntax a model writes, from its chat template (the markup it renders tool calls with),
// then its special tokens (`has_token`: the tokenizer has this added token), then model_type.
ToolSyntax detect_tool_syntax(std::string_view chat_template, std::string_view model_type,
                              const std::function<bool(const std::string&)>& has_token);

// The text that opens a call ("<tool_call>", "[TOOL_CALLS]"; "" for llama3_json).
std::string_view call_marker(ToolSyntax s);

// An id for a new call: "call_" + 24 alphanumerics, or 9 alphanumerics for mistral (its chat
// templates refuse any other length when the call comes back in the history).
std::string new_tool_call_id(ToolSyntax s);

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text of the arguments object, as the model wrote it
};

struct ParsedOutput {
  std::string content;          // text that is not a call
  std::vector<ToolCall> calls;  // with fresh ids
};

// Reads calls out of a whole output. Text that is not a well-formed call in `syntax` (a block
// that does not parse, a missing name) leaves the whole output as content with no calls.
// `drop`: strings removed from the text first (e.g. EOS text when special tokens are kept).
ParsedOutput parse_tool_calls(ToolSyntax syntax, std::string_view text,
                              const std::vector<std::string>& drop = {});

// One piece of a streamed call, as OpenAI's delta.tool_calls[] carries it: the first piece of a
// call has its id and name (and possibly arguments), later ones only argument text.
struct ToolCallDelta {
  int index = 0;
  std::string id;    // first piece only
  std::string name;  // first piece only
  std::string arguments;
};

struct StreamDelta {
  std::string content;
  std::vector<ToolCallDelta> calls;
  bool empty() const { return content.empty() && calls.empty(); }
};

// Follows one choice's text as it streams. Markers split across deltas are held back until
// resolved; call arguments stream as they arrive. The concatenated content and arguments equal
// what parse_tool_calls returns for the whole text when every call is well formed.
class ToolCallStreamParser {
 public:
  explicit ToolCallStreamParser(ToolSyntax syntax, std::vector<std::string> drop = {});
  StreamDelta feed(std::string_view text);
  // The output ended: whatever was held back (an unfinished marker, undecided text).
  StreamDelta finish();
  int num_calls() const { return static_cast<int>(emitted_.size()); }
  // A call was started and then did not parse (its text was already sent as a call).
  bool malformed() const { return malformed_; }

 private:
  struct Emitted {
    size_t region = 0;     // which call region (hermes block / llama text / mistral array)
    size_t object = 0;     // which object within it
    size_t args_sent = 0;  // bytes of the arguments value sent
    bool done = false;
  };
  void move_ready(bool final);
  void step(StreamDelta& out, bool final);
  void emit_content(StreamDelta& out, std::string_view text);
  // Calls found in buf_[region_begin_, end): new ones started, argument text sent. Returns 0
  // (more to come), 1 (well formed so far / closed), 2 (not a call: nothing was sent, the
  // region is content) or 3 (malformed after a call was sent).
  int sync_region(StreamDelta& out, size_t end, bool region_closed);

  ToolSyntax syntax_;
  std::vector<std::string> drop_;
  std::string raw_;          // fed text not yet cleared of drop strings
  std::string buf_;          // text the reader works on
  size_t pos_ = 0;           // bytes of buf_ handled
  bool plain_ = false;       // the rest is content
  bool in_region_ = false;   // inside a call region
  size_t region_marker_begin_ = 0;  // where its marker starts
  size_t region_begin_ = 0;  // its first byte after the marker
  size_t region_end_ = std::string::npos;  // mistral: past the array
  size_t region_index_ = 0;
  bool decided_ = false;     // llama3_json: whether the output opens with a call was decided
  bool after_calls_ = false; // mistral: the array closed
  bool malformed_ = false;
  std::vector<Emitted> emitted_;
  size_t region_first_emitted_ = 0;  // index in emitted_ of this region's first call
};

// Reasoning: "qwen3" (reasoning only when the output opens with <think>; an unclosed block is
// all reasoning) or "deepseek_r1" (the template opens the block: everything before </think> is
// reasoning, and all of it when </think> never comes).
enum class ReasoningSyntax { kNone, kQwen3, kDeepSeekR1 };
std::optional<ReasoningSyntax> reasoning_syntax_from_name(std::string_view name);
const char* reasoning_syntax_name(ReasoningSyntax s);

struct ReasoningSplit {
  std::string reasoning;
  std::string content;
  bool has_reasoning = false;
};
ReasoningSplit split_reasoning(ReasoningSyntax syntax, std::string_view text);

// Streams the split: tags split across deltas are held back.
class ReasoningStreamParser {
 public:
  explicit ReasoningStreamParser(ReasoningSyntax syntax) : syntax_(syntax) {}
  struct Delta {
    std::string reasoning, content;
  };
  Delta feed(std::string_view text);
  Delta finish();
  bool saw_reasoning() const { return saw_reasoning_; }

 private:
  Delta step(bool final);
  ReasoningSyntax syntax_;
  std::string pending_;
  enum class State { kStart, kReasoning, kStripping, kContent } state_ = State::kStart;
  bool saw_reasoning_ = false;
};

// --- Requests -------------------------------------------------------------------------------

// A validated function tool: name, and its parameters schema (JSON text; "{}"-like object when
// the client gave none).
struct ToolSpec {
  std::string name;
  nlohmann::ordered_json parameters;
};

// The output constraint for tool_choice "required" (`only` empty: any of `tools`, up to
// `max_calls` calls) or a named function (`only`: that one, one call). When the family's
// marker is a special token the model cannot write under a constraint, `marker_in_prompt` is
// true: the caller appends the marker token to the prompt and the constraint covers the rest.
struct ToolConstraint {
  grammar::Constraint constraint;
  bool marker_in_prompt = false;
};
ToolConstraint tool_call_constraint(ToolSyntax syntax, const std::vector<ToolSpec>& tools,
                                    const std::string& only, int max_calls, bool marker_is_special);

}  // namespace iris::tools
