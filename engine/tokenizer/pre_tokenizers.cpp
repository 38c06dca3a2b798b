// Pre-tokenizers: split each normalized section into the pieces the model sees. Every split
// follows HF's NormalizedString::split: the pattern yields (range, is_match) segments covering
// the text, the delimiter behavior (Removed, Isolated, MergedWithPrevious, MergedWithNext,
// Contiguous) decides how matches join their neighbours, and empty pieces are dropped.
#include <algorithm>
#include <functional>

#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace iris::tok {
namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const json& config, const char* where, Behavior fallback) {
  auto it = config.find("behavior");
  if (it == config.end() || it->is_null()) return fallback;
  IRIS_CHECK(it->is_string()) << "tokenizer.json: " << where << ".behavior must be a string";
  std::string b = it->get<std::string>();
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail("tokenizer.json: ", where, ": unknown split behavior '", b, "'");
}

struct Segment {
  size_t begin, end;
  bool is_match;
};

// Turns match ranges into segments covering all of `n` bytes (HF Pattern::find_matches).
std::vector<Segment> cover(const std::vector<std::pair<size_t, size_t>>& matches, size_t n,
                           bool invert) {
  std::vector<Segment> segs;
  if (n == 0) return {{0, 0, invert}};
  size_t prev = 0;
  for (auto [b, e] : matches) {
    if (prev != b) segs.push_back({prev, b, invert});
    segs.push_back({b, e, !invert});
    prev = e;
  }
  if (prev != n) segs.push_back({prev, n, invert});
  return segs;
}

// Each character satisfying `pred` is one match (HF's `impl Pattern for Fn(char) -> bool`).
std::vector<std::pair<size_t, size_t>> char_matches(std::string_view s,
                                                    const std::function<bool(char32_t)>& pred) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    if (pred(next_code_point(s, i))) out.emplace_back(start, i);
  }
  return out;
}

void split_piece(const Piece& piece, const std::vector<Segment>& segs, Behavior behavior,
                 std::vector<Piece>& out) {
  // (begin, end, remove)
  std::vector<Segment> splits;
  switch (behavior) {
    case Behavior::Isolated:
      for (auto s : segs) splits.push_back({s.begin, s.end, false});
      break;
    case Behavior::Removed:
      splits = segs;
      break;
    case Behavior::Contiguous: {
      bool prev_match = false;
      for (auto s : segs) {
        if (s.is_match == prev_match && !splits.empty()) {
          splits.back().end = s.end;
        } else {
          splits.push_back({s.begin, s.end, false});
        }
        prev_match = s.is_match;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool prev_match = false;
      for (auto s : segs) {
        if (s.is_match && !prev_match && !splits.empty()) {
          splits.back().end = s.end;
        } else {
          splits.push_back({s.begin, s.end, false});
        }
        prev_match = s.is_match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !prev_match && !splits.empty()) {
          splits.back().begin = it->begin;
        } else {
          splits.push_back({it->begin, it->end, false});
        }
        prev_match = it->is_match;
      }
      std::reverse(splits.begin(), splits.end());
      break;
    }
  }
  for (auto s : splits) {
    if (s.is_match /* remove */ || s.end == s.begin) continue;
    out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
  }
}

// A pre-tokenizer that splits each piece with one pattern and one behavior.
class PatternSplit : public PreTokenizer {
 public:
  using Finder = std::function<std::vector<std::pair<size_t, size_t>>(std::string_view)>;
  PatternSplit(Finder finder, Behavior behavior, bool invert)
      : finder_(std::move(finder)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (const auto& p : pieces) {
      split_piece(p, cover(finder_(p.text), p.text.size(), invert_), behavior_, out);
    }
    pieces = std::move(out);
  }

 private:
  Finder finder_;
  Behavior behavior_;
  bool invert_;
};

std::unique_ptr<PreTokenizer> regex_split(const std::string& regex, Behavior behavior,
                                          bool invert) {
  auto re = std::make_shared<Regex>(regex);
  return std::make_unique<PatternSplit>([re](std::string_view s) { return re->find_all(s); },
                                        behavior, invert);
}

std::unique_ptr<PreTokenizer> char_split(std::function<bool(char32_t)> pred, Behavior behavior) {
  return std::make_unique<PatternSplit>(
      [pred = std::move(pred)](std::string_view s) { return char_matches(s, pred); }, behavior,
      false);
}

const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space),
        regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern) : nullptr) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> split;
    for (auto& p : pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text = ' ' + p.text;
      if (regex_) {
        split_piece(p, cover(regex_->find_all(p.text), p.text.size(), false), Behavior::Isolated,
                    split);
      } else if (!p.text.empty()) {
        split.push_back(std::move(p));
      }
    }
    const auto& table = byte_to_unicode();
    for (auto& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped += table[c];
      p.text = std::move(mapped);
    }
    pieces = std::move(split);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {
    size_t i = 0;
    replacement_cp_ = replacement_.empty() ? U'\u2581' : next_code_point(replacement_, i);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (auto& p : pieces) {
      std::string s;
      s.reserve(p.text.size() + 3);
      for (char c : p.text) {
        if (c == ' ') {
          s += replacement_;
        } else {
          s.push_back(c);
        }
      }
      bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == Prepend::Always || (prepend_ == Prepend::First && p.at_origin))) {
        s = replacement_ + s;
      }
      Piece np{std::move(s), p.at_origin};
      if (split_) {
        char32_t r = replacement_cp_;
        auto segs = cover(char_matches(np.text, [r](char32_t c) { return c == r; }),
                          np.text.size(), false);
        split_piece(np, segs, Behavior::MergedWithNext, out);
      } else if (!np.text.empty()) {
        out.push_back(std::move(np));
      }
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  char32_t replacement_cp_;
  Prepend prepend_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& config) {
  if (config.is_null()) return nullptr;
  std::string type = get_string(config, "type", "pre_tokenizer");
  if (type == "Sequence") {
    const json& list = require(config, "pretokenizers", "pre_tokenizer Sequence");
    IRIS_CHECK(list.is_array()) << "tokenizer.json: pre_tokenizer Sequence.pretokenizers must be a list";
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const auto& item : list) {
      if (auto p = make_pre_tokenizer(item)) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Split") {
    std::string regex = pattern_to_regex(require(config, "pattern", "pre_tokenizer Split"),
                                         "pre_tokenizer Split");
    Behavior behavior = parse_behavior(config, "pre_tokenizer Split", Behavior::Removed);
    IRIS_CHECK(config.contains("behavior")) << "tokenizer.json: pre_tokenizer Split is missing 'behavior'";
    return regex_split(regex, behavior, get_bool(config, "invert", false));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(get_bool(config, "add_prefix_space", true),
                                                   get_bool(config, "use_regex", true));
  }
  if (type == "Metaspace") {
    std::string replacement = get_string(config, "replacement", "pre_tokenizer Metaspace", "\u2581");
    auto scheme = MetaspacePreTokenizer::Prepend::Always;
    if (config.contains("prepend_scheme") && !config["prepend_scheme"].is_null()) {
      std::string s = get_string(config, "prepend_scheme", "pre_tokenizer Metaspace");
      if (s == "first") {
        scheme = MetaspacePreTokenizer::Prepend::First;
      } else if (s == "never") {
        scheme = MetaspacePreTokenizer::Prepend::Never;
      } else {
        IRIS_CHECK(s == "always") << "tokenizer.json: Metaspace prepend_scheme '" << s
                                  << "' is not one of always/first/never";
      }
    } else if (!get_bool(config, "add_prefix_space", true)) {
      scheme = MetaspacePreTokenizer::Prepend::Never;
    }
    return std::make_unique<MetaspacePreTokenizer>(replacement, scheme,
                                                   get_bool(config, "split", true));
  }
  if (type == "Whitespace") {
    return regex_split(R"(\w+|[^\w\s]+)", Behavior::Removed, /*invert=*/true);
  }
  if (type == "WhitespaceSplit") return char_split(is_whitespace, Behavior::Removed);
  if (type == "Digits") {
    bool individual = get_bool(config, "individual_digits", false);
    return char_split(is_numeric, individual ? Behavior::Isolated : Behavior::Contiguous);
  }
  if (type == "Punctuation") {
    return char_split(is_punctuation, parse_behavior(config, "pre_tokenizer Punctuation",
                                                     Behavior::Isolated));
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    parts.push_back(char_split(is_whitespace, Behavior::Removed));
    parts.push_back(char_split(is_punctuation, Behavior::Isolated));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "UnicodeScripts") {
    fail("tokenizer.json: pre_tokenizer UnicodeScripts is not supported");
  }
  fail("tokenizer.json: unsupported pre_tokenizer type '", type, "'");
}

}  // namespace iris::tok
