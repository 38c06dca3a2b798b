// Tool-call syntaxes: detection, the streaming reader (which the whole-output reader reuses, so
// both agree byte for byte), the reasoning split and the tool_choice constraint.
//
// The reader re-scans the current call region on every delta with a small partial-JSON
// scanner: it finds each call object's "name" (complete string) and the byte range of its
// "arguments"/"parameters" value. A container value still open at the end of the buffer owns
// every byte up to there, so its text can be sent as it arrives; a scalar is sent once closed.
#include "engine/tool_calls/tool_calls.h"

#include <cctype>
#include <random>

#include "engine/core/check.h"

namespace iris::tools {

namespace {

constexpr size_t npos = std::string::npos;
constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kMistralMarker = "[TOOL_CALLS]";
constexpr std::string_view kPythonTag = "<|python_tag|>";

bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

size_t skip_ws(std::string_view s, size_t p) {
  while (p < s.size() && is_ws(s[p])) ++p;
  return p;
}

// Length of the longest proper prefix of `marker` that `text` ends with.
size_t partial_suffix(std::string_view text, std::string_view marker) {
  const size_t max = std::min(text.size(), marker.size() - 1);
  for (size_t n = max; n > 0; --n)
    if (text.substr(text.size() - n) == marker.substr(0, n)) return n;
  return 0;
}

enum class Scan { kComplete, kIncomplete, kInvalid };

// A JSON string starting at s[p] == '"'; p moves past it. `out` gets the decoded value.
Scan scan_string(std::string_view s, size_t& p, std::string* out) {
  const size_t start = p;
  size_t q = p + 1;
  while (q < s.size()) {
    const char c = s[q];
    if (c == '\\') {
      q += 2;
      continue;
    }
    if (c == '"') {
      if (out) {
        try {
          *out = nlohmann::json::parse(s.substr(start, q + 1 - start)).get<std::string>();
        } catch (const nlohmann::json::exception&) {
          return Scan::kInvalid;
        }
      }
      p = q + 1;
      return Scan::kComplete;
    }
    if (static_cast<unsigned char>(c) < 0x20) return Scan::kInvalid;
    ++q;
  }
  return Scan::kIncomplete;
}

// Any JSON value at s[p]; p moves past it when complete. Structure only (brackets balance,
// strings close); the value's text is checked by nlohmann when the call completes.
Scan scan_value(std::string_view s, size_t& p) {
  if (p >= s.size()) return Scan::kIncomplete;
  const char c = s[p];
  if (c == '"') return scan_string(s, p, nullptr);
  if (c == '{' || c == '[') {
    std::string stack;
    size_t q = p;
    while (q < s.size()) {
      const char d = s[q];
      if (d == '"') {
        const Scan st = scan_string(s, q, nullptr);
        if (st != Scan::kComplete) return st;
        continue;
      }
      if (d == '{' || d == '[') stack.push_back(d == '{' ? '}' : ']');
      else if (d == '}' || d == ']') {
        if (stack.empty() || stack.back() != d) return Scan::kInvalid;
        stack.pop_back();
        if (stack.empty()) {
          p = q + 1;
          return Scan::kComplete;
        }
      }
      ++q;
    }
    return Scan::kIncomplete;
  }
  size_t q = p;
  while (q < s.size() && (std::isalnum(static_cast<unsigned char>(s[q])) || s[q] == '-' || s[q] == '+' ||
                          s[q] == '.'))
    ++q;
  if (q == p) return Scan::kInvalid;
  if (q == s.size()) return Scan::kIncomplete;  // a number may go on
  p = q;
  return Scan::kComplete;
}

struct CallObject {
  bool has_name = false;
  std::string name;
  size_t args_begin = npos, args_end = npos;  // absolute offsets
  bool args_container = false;
  bool closed = false;
};

// A call object at s[p] == '{'.
Scan scan_object(std::string_view s, size_t& p, CallObject& obj) {
  size_t q = p + 1;
  bool first = true;
  for (;;) {
    q = skip_ws(s, q);
    if (q >= s.size()) return Scan::kIncomplete;
    if (s[q] == '}') {
      obj.closed = true;
      p = q + 1;
      return Scan::kComplete;
    }
    if (!first) {
      if (s[q] != ',') return Scan::kInvalid;
      q = skip_ws(s, q + 1);
      if (q >= s.size()) return Scan::kIncomplete;
    }
    first = false;
    if (s[q] != '"') return Scan::kInvalid;
    std::string key;
    Scan st = scan_string(s, q, &key);
    if (st != Scan::kComplete) return st;
    q = skip_ws(s, q);
    if (q >= s.size()) return Scan::kIncomplete;
    if (s[q] != ':') return Scan::kInvalid;
    q = skip_ws(s, q + 1);
    if (q >= s.size()) return Scan::kIncomplete;
    if (key == "name") {
      if (s[q] != '"') return Scan::kInvalid;
      std::string name;
      st = scan_string(s, q, &name);
      if (st != Scan::kComplete) return st;
      obj.has_name = true;
      obj.name = std::move(name);
      continue;
    }
    const bool args = key == "arguments" || key == "parameters";
    if (args) {
      obj.args_begin = q;
      obj.args_container = s[q] == '{' || s[q] == '[';
    }
    st = scan_value(s, q);
    if (st != Scan::kComplete) return st;
    if (args) obj.args_end = q;
  }
}

struct RegionScan {
  std::vector<CallObject> objects;
  Scan status = Scan::kIncomplete;
  size_t end = npos;  // mistral: just past the closing ']'
};

// The call objects of a region s[begin, size): hermes one object, llama3_json objects joined
// by ';', mistral a JSON array of objects (or one bare object).
RegionScan scan_region(ToolSyntax syntax, std::string_view s, size_t begin) {
  RegionScan r;
  size_t p = skip_ws(s, begin);
  if (p >= s.size()) return r;
  bool array = false;
  if (syntax == ToolSyntax::kMistral && s[p] == '[') {
    array = true;
    p = skip_ws(s, p + 1);
    if (p >= s.size()) return r;
  }
  for (;;) {
    if (s[p] != '{') {
      r.status = Scan::kInvalid;
      return r;
    }
    r.objects.emplace_back();
    const Scan st = scan_object(s, p, r.objects.back());
    if (st != Scan::kComplete) {
      r.status = st;
      return r;
    }
    p = skip_ws(s, p);
    if (p >= s.size()) {
      // llama3_json and hermes: complete so far; mistral: the array must still close.
      r.status = array ? Scan::kIncomplete : Scan::kComplete;
      if (syntax == ToolSyntax::kMistral && !array) r.end = p;
      return r;
    }
    const char sep = syntax == ToolSyntax::kMistral ? ',' : ';';
    if (array && s[p] == ']') {
      r.status = Scan::kComplete;
      r.end = p + 1;
      return r;
    }
    if (syntax == ToolSyntax::kMistral && !array) {
      r.status = Scan::kComplete;
      r.end = p;
      return r;
    }
    if (syntax == ToolSyntax::kHermes || s[p] != sep) {
      r.status = Scan::kInvalid;
      return r;
    }
    p = skip_ws(s, p + 1);
    if (p >= s.size()) return r;
  }
}

std::string random_alnum(size_t n) {
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int> d(0, 61);
  std::string s(n, ' ');
  for (char& c : s) c = kChars[d(rng)];
  return s;
}

}  // namespace

const char* tool_syntax_name(ToolSyntax s) {
  switch (s) {
    case ToolSyntax::kNone: return "none";
    case ToolSyntax::kLlama3Json: return "llama3_json";
    case ToolSyntax::kHermes: return "hermes";
    case ToolSyntax::kMistral: return "mistral";
  }
  return "?";
}

std::optional<ToolSyntax> tool_syntax_from_name(std::string_view name) {
  for (ToolSyntax s : {ToolSyntax::kNone, ToolSyntax::kLlama3Json, ToolSyntax::kHermes, ToolSyntax::kMistral})
    if (name == tool_syntax_name(s)) return s;
  return std::nullopt;
}

ToolSyntax detect_tool_syntax(std::string_view tmpl, std::string_view model_type,
                              const std::function<bool(const std::string&)>& has_token) {
  auto in = [&](std::string_view needle) { return tmpl.find(needle) != std::string_view::npos; };
  if (in("<tool_call>")) return ToolSyntax::kHermes;
  if (in("[TOOL_CALLS]")) return ToolSyntax::kMistral;
  // Llama 3.x templates describe the call as {"name": ..., "parameters": ...} after the header.
  if (in("<|start_header_id|>") && in("\"parameters\"") && in("tools")) return ToolSyntax::kLlama3Json;
  if (has_token && has_token("<tool_call>")) return ToolSyntax::kHermes;
  if (has_token && has_token("[TOOL_CALLS]")) return ToolSyntax::kMistral;
  if (model_type == "qwen2" || model_type == "qwen3" || model_type == "qwen2_moe" || model_type == "qwen3_moe")
    return ToolSyntax::kHermes;
  if (model_type == "mistral" || model_type == "mixtral") return ToolSyntax::kMistral;
  return ToolSyntax::kNone;
}

std::string_view call_marker(ToolSyntax s) {
  switch (s) {
    case ToolSyntax::kHermes: return kHermesOpen;
    case ToolSyntax::kMistral: return kMistralMarker;
    default: return {};
  }
}

std::string new_tool_call_id(ToolSyntax s) {
  return s == ToolSyntax::kMistral ? random_alnum(9) : "call_" + random_alnum(24);
}

// --- streaming reader --------------------------------------------------------------------------

ToolCallStreamParser::ToolCallStreamParser(ToolSyntax syntax, std::vector<std::string> drop)
    : syntax_(syntax), drop_(std::move(drop)) {
  std::erase_if(drop_, [](const std::string& d) { return d.empty(); });
}

StreamDelta ToolCallStreamParser::feed(std::string_view text) {
  StreamDelta out;
  raw_.append(text);
  move_ready(false);
  step(out, false);
  return out;
}

StreamDelta ToolCallStreamParser::finish() {
  StreamDelta out;
  move_ready(true);
  step(out, true);
  return out;
}

// Moves fed text into buf_ without the drop strings, holding back a possible partial one.
void ToolCallStreamParser::move_ready(bool final) {
  for (;;) {
    size_t best = npos, len = 0;
    for (const std::string& d : drop_) {
      const size_t at = raw_.find(d);
      if (at < best) {
        best = at;
        len = d.size();
      }
    }
    if (best == npos) break;
    buf_.append(raw_, 0, best);
    raw_.erase(0, best + len);
  }
  size_t hold = 0;
  if (!final)
    for (const std::string& d : drop_) hold = std::max(hold, partial_suffix(raw_, d));
  buf_.append(raw_, 0, raw_.size() - hold);
  raw_.erase(0, raw_.size() - hold);
}

void ToolCallStreamParser::emit_content(StreamDelta& out, std::string_view text) { out.content.append(text); }

// Starts calls whose name is known and sends argument text. Returns the region's scan status.
int ToolCallStreamParser::sync_region(StreamDelta& out, size_t end, bool region_closed) {
  const std::string_view s = std::string_view(buf_).substr(0, end);
  RegionScan r = scan_region(syntax_, s, region_begin_);
  for (const CallObject& o : r.objects)
    if (o.closed && !o.has_name) r.status = Scan::kInvalid;  // JSON, but not a call
  for (size_t k = 0; k < r.objects.size(); ++k) {
    const CallObject& o = r.objects[k];
    const size_t e = region_first_emitted_ + k;
    if (e >= emitted_.size()) {
      if (!o.has_name) break;
      emitted_.push_back(Emitted{region_index_, k, 0, false});
      ToolCallDelta d;
      d.index = static_cast<int>(e);
      d.id = new_tool_call_id(syntax_);
      d.name = o.name;
      out.calls.push_back(std::move(d));
    }
    Emitted& em = emitted_[e];
    if (em.done) continue;
    std::string piece;
    if (o.args_begin != npos) {
      const size_t avail = o.args_end != npos ? o.args_end : (o.args_container ? s.size() : o.args_begin);
      if (avail > o.args_begin + em.args_sent) {
        piece.assign(s.substr(o.args_begin + em.args_sent, avail - o.args_begin - em.args_sent));
        em.args_sent = avail - o.args_begin;
      }
      if (o.args_end != npos) em.done = true;
    } else if (o.closed) {
      piece = "{}";  // a call without arguments
      em.done = true;
    }
    if (!piece.empty()) {
      if (!out.calls.empty() && out.calls.back().index == static_cast<int>(e)) {
        out.calls.back().arguments += piece;
      } else {
        ToolCallDelta d;
        d.index = static_cast<int>(e);
        d.arguments = std::move(piece);
        out.calls.push_back(std::move(d));
      }
    }
  }
  if (r.status == Scan::kInvalid || (region_closed && r.status != Scan::kComplete)) {
    // Not a call after all: its text is content when nothing of it was sent as a call.
    if (emitted_.size() == region_first_emitted_) return 2;
    malformed_ = true;
    return 3;
  }
  if (syntax_ == ToolSyntax::kMistral && r.status == Scan::kComplete && r.end != npos) {
    region_end_ = r.end;
    return 1;
  }
  return r.status == Scan::kComplete ? 1 : 0;
}

void ToolCallStreamParser::step(StreamDelta& out, bool final) {
  for (;;) {
    if (pos_ >= buf_.size() && !final) return;
    if (plain_) {
      emit_content(out, std::string_view(buf_).substr(pos_));
      pos_ = buf_.size();
      return;
    }
    if (!in_region_) {
      const std::string_view rest = std::string_view(buf_).substr(pos_);
      if (syntax_ == ToolSyntax::kNone) {
        plain_ = true;
        continue;
      }
      if (syntax_ == ToolSyntax::kLlama3Json) {
        if (decided_) {
          plain_ = true;
          continue;
        }
        // A call only when the output opens with it (after whitespace, an optional python tag).
        size_t p = skip_ws(rest, 0);
        std::string_view after = rest.substr(p);
        if (after.substr(0, kPythonTag.size()) == kPythonTag) {
          p = skip_ws(rest, p + kPythonTag.size());
          after = rest.substr(p);
        } else if (!after.empty() && kPythonTag.substr(0, after.size()) == after && !final) {
          return;  // could still be the tag
        }
        if (after.empty()) {
          if (!final) return;
          decided_ = true;
          plain_ = true;
          continue;
        }
        decided_ = true;
        if (after[0] != '{') {
          plain_ = true;
          continue;
        }
        region_marker_begin_ = pos_;
        in_region_ = true;
        region_begin_ = pos_ + p;
        region_first_emitted_ = emitted_.size();
        continue;
      }
      if (syntax_ == ToolSyntax::kMistral && after_calls_) {
        plain_ = true;
        continue;
      }
      const std::string_view marker = call_marker(syntax_);
      const size_t at = rest.find(marker);
      if (at == npos) {
        const size_t hold = final ? 0 : partial_suffix(rest, marker);
        emit_content(out, rest.substr(0, rest.size() - hold));
        pos_ += rest.size() - hold;
        return;
      }
      emit_content(out, rest.substr(0, at));
      region_marker_begin_ = pos_ + at;
      pos_ += at + marker.size();
      in_region_ = true;
      region_begin_ = pos_;
      region_first_emitted_ = emitted_.size();
      continue;
    }
    // Inside a call region.
    auto leave_as_content = [&](size_t end) {
      emit_content(out, std::string_view(buf_).substr(region_marker_begin_, end - region_marker_begin_));
      pos_ = end;
      in_region_ = false;
      ++region_index_;
      if (syntax_ != ToolSyntax::kHermes) plain_ = true;
    };
    if (syntax_ == ToolSyntax::kHermes) {
      const size_t close = buf_.find(kHermesClose, region_begin_);
      size_t end = close;
      if (close == npos) end = buf_.size() - (final ? 0 : partial_suffix(buf_, kHermesClose));
      const int st = sync_region(out, end, close != npos || final);
      if (st == 2) {
        leave_as_content(close != npos ? close + kHermesClose.size() : buf_.size());
        continue;
      }
      if (close == npos && !final) {
        pos_ = buf_.size();
        return;
      }
      pos_ = close != npos ? close + kHermesClose.size() : buf_.size();
      in_region_ = false;
      ++region_index_;
      if (close == npos) return;
      continue;
    }
    const int st = sync_region(out, buf_.size(), final);
    if (st == 2) {
      leave_as_content(buf_.size());
      continue;
    }
    if (st == 1 && syntax_ == ToolSyntax::kMistral && region_end_ != npos) {
      pos_ = region_end_;
      in_region_ = false;
      after_calls_ = true;
      continue;
    }
    pos_ = buf_.size();
    return;
  }
}

ParsedOutput parse_tool_calls(ToolSyntax syntax, std::string_view text, const std::vector<std::string>& drop) {
  ToolCallStreamParser p(syntax, drop);
  StreamDelta a = p.feed(text);
  StreamDelta b = p.finish();
  ParsedOutput out;
  out.content = a.content + b.content;
  for (StreamDelta* d : {&a, &b})
    for (ToolCallDelta& c : d->calls) {
      if (c.index >= static_cast<int>(out.calls.size())) out.calls.push_back(ToolCall{c.id, c.name, ""});
      out.calls[c.index].arguments += c.arguments;
    }
  bool ok = !p.malformed();
  for (const ToolCall& c : out.calls) {
    if (!ok) break;
    try {
      ok = nlohmann::json::parse(c.arguments).is_object();
    } catch (const nlohmann::json::exception&) {
      ok = false;
    }
  }
  if (!ok) {
    // The whole text as content (drop strings removed, as the reader saw it).
    ToolCallStreamParser plain(ToolSyntax::kNone, drop);
    out.content = plain.feed(text).content;
    out.content += plain.finish().content;
    out.calls.clear();
  }
  return out;
}

// --- reasoning ---------------------------------------------------------------------------------

namespace {
constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kThinkClose = "</think>";
}  // namespace

std::optional<ReasoningSyntax> reasoning_syntax_from_name(std::string_view name) {
  if (name == "none" || name.empty()) return ReasoningSyntax::kNone;
  if (name == "qwen3") return ReasoningSyntax::kQwen3;
  if (name == "deepseek_r1") return ReasoningSyntax::kDeepSeekR1;
  return std::nullopt;
}

const char* reasoning_syntax_name(ReasoningSyntax s) {
  switch (s) {
    case ReasoningSyntax::kNone: return "none";
    case ReasoningSyntax::kQwen3: return "qwen3";
    case ReasoningSyntax::kDeepSeekR1: return "deepseek_r1";
  }
  return "?";
}

ReasoningStreamParser::Delta ReasoningStreamParser::feed(std::string_view text) {
  pending_.append(text);
  return step(false);
}

ReasoningStreamParser::Delta ReasoningStreamParser::finish() { return step(true); }

ReasoningStreamParser::Delta ReasoningStreamParser::step(bool final) {
  Delta d;
  for (;;) {
    if (syntax_ == ReasoningSyntax::kNone) state_ = State::kContent;
    if (state_ == State::kContent) {
      d.content += pending_;
      pending_.clear();
      return d;
    }
    if (state_ == State::kStart) {
      // Leading whitespace, then <think> opens the block; deepseek_r1 is inside it already.
      const size_t p = skip_ws(pending_, 0);
      const std::string_view rest = std::string_view(pending_).substr(p);
      if (rest.substr(0, kThinkOpen.size()) == kThinkOpen) {
        pending_.erase(0, p + kThinkOpen.size());
        state_ = State::kReasoning;
        saw_reasoning_ = true;
        continue;
      }
      if (!final && kThinkOpen.substr(0, rest.size()) == rest) return d;  // maybe the tag
      state_ = syntax_ == ReasoningSyntax::kDeepSeekR1 ? State::kReasoning : State::kContent;
      saw_reasoning_ = state_ == State::kReasoning;
      continue;
    }
    if (state_ == State::kStripping) {
      const size_t p = skip_ws(pending_, 0);
      pending_.erase(0, p);
      if (pending_.empty() && !final) return d;
      state_ = State::kContent;
      continue;
    }
    // Reasoning until </think>.
    const size_t close = pending_.find(kThinkClose);
    if (close == npos) {
      const size_t hold = final ? 0 : partial_suffix(pending_, kThinkClose);
      d.reasoning.append(pending_, 0, pending_.size() - hold);
      pending_.erase(0, pending_.size() - hold);
      return d;
    }
    d.reasoning.append(pending_, 0, close);
    pending_.erase(0, close + kThinkClose.size());
    // The newlines templates put after </think> are not content.
    const size_t p = skip_ws(pending_, 0);
    if (p == pending_.size() && !final) {
      pending_.clear();
      state_ = State::kStripping;
      return d;
    }
    pending_.erase(0, p);
    state_ = State::kContent;
  }
}

ReasoningSplit split_reasoning(ReasoningSyntax syntax, std::string_view text) {
  ReasoningStreamParser p(syntax);
  ReasoningStreamParser::Delta a = p.feed(text);
  ReasoningStreamParser::Delta b = p.finish();
  ReasoningSplit s;
  s.reasoning = a.reasoning + b.reasoning;
  s.content = a.content + b.content;
  s.has_reasoning = p.saw_reasoning();
  return s;
}

// --- constraint --------------------------------------------------------------------------------

ToolConstraint tool_call_constraint(ToolSyntax syntax, const std::vector<ToolSpec>& tools,
                                    const std::string& only, int max_calls, bool marker_is_special) {
  IRIS_CHECK(syntax != ToolSyntax::kNone) << "no tool-call syntax for this model";
  const char* args_key = syntax == ToolSyntax::kLlama3Json ? "parameters" : "arguments";
  nlohmann::ordered_json alternatives = nlohmann::ordered_json::array();
  for (const ToolSpec& t : tools) {
    if (!only.empty() && t.name != only) continue;
    nlohmann::ordered_json call = {{"type", "object"},
                                   {"properties", {{"name", {{"const", t.name}}}, {args_key, t.parameters}}},
                                   {"required", {"name", args_key}},
                                   {"additionalProperties", false}};
    alternatives.push_back(std::move(call));
  }
  IRIS_CHECK(!alternatives.empty()) << "no tool to call";
  nlohmann::ordered_json schema =
      alternatives.size() == 1 ? alternatives[0] : nlohmann::ordered_json{{"anyOf", alternatives}};
  const int n = only.empty() ? std::max(1, max_calls) : 1;
  nlohmann::ordered_json spec = {{"schema", std::move(schema)}, {"max_values", n}};
  ToolConstraint out;
  switch (syntax) {
    case ToolSyntax::kLlama3Json:
      spec["separator"] = "; ";
      break;
    case ToolSyntax::kHermes:
      out.marker_in_prompt = marker_is_special;
      if (marker_is_special) {
        // The markers cannot be written under a constraint: one call after the prefilled one.
        spec["begin"] = "\n";
        spec["max_values"] = 1;
      } else {
        spec["begin"] = "<tool_call>\n";
        spec["separator"] = "\n</tool_call>\n<tool_call>\n";
        spec["end"] = "\n</tool_call>";
      }
      break;
    case ToolSyntax::kMistral:
      out.marker_in_prompt = marker_is_special;
      spec["begin"] = std::string(marker_is_special ? "" : kMistralMarker) + "[";
      spec["separator"] = ", ";
      spec["end"] = "]";
      break;
    case ToolSyntax::kNone:
      break;
  }
  out.constraint = grammar::Constraint{grammar::ConstraintKind::kTaggedJson, spec.dump()};
  return out;
}

}  // namespace iris::tools
