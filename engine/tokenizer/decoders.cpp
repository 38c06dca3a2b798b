// Decoders: turn the token strings of a decode back into text (HF's decode_chain). ByteLevel
// maps the GPT-2 alphabet back to bytes; ByteFallback joins <0xXX> runs into UTF-8; Metaspace
// and Strip undo SentencePiece's leading "▁". With DecodeContext::continuation the first token
// is treated as continuing earlier text, so no leading space is removed (streaming decode).
#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace iris::tok {
namespace {

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext&) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      size_t start = bytes.size();
      size_t i = 0;
      bool ok = true;
      while (i < t.size()) {
        int b = unicode_to_byte(next_code_point(t, i));
        if (b < 0) {
          ok = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {  // not in the byte alphabet (e.g. an added token): its own UTF-8 bytes
        bytes.resize(start);
        bytes += t;
      }
    }
    tokens.assign(1, to_valid_utf8(bytes));
  }
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext&) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      int hi, lo;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && (hi = hex_digit(t[3])) >= 0 &&
          (lo = hex_digit(t[4])) >= 0) {
        pending.push_back(static_cast<char>(hi * 16 + lo));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext&) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const std::string& regex, std::string content)
      : regex_(regex), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext&) const override {
    for (auto& t : tokens) t = regex_.replace_all(t, content_);
  }

 private:
  Regex regex_;
  std::string content_;
};

// Strips up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext& ctx) const override {
    for (size_t idx = 0; idx < tokens.size(); ++idx) {
      auto& t = tokens[idx];
      size_t begin = 0, end = t.size();
      // In continuation mode the text already has its beginning; a leading strip would eat a
      // real space (only the first token can be the start of the text).
      size_t start = (ctx.continuation && idx == 0) ? 0 : start_;
      for (size_t k = 0; k < start && !content_.empty(); ++k) {
        if (t.compare(begin, content_.size(), content_) != 0) break;
        begin += content_.size();
      }
      for (size_t k = 0; k < stop_ && !content_.empty() && end >= begin + content_.size(); ++k) {
        if (t.compare(end - content_.size(), content_.size(), content_) != 0) break;
        end -= content_.size();
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext& ctx) const override {
    for (size_t idx = 0; idx < tokens.size(); ++idx) {
      auto& t = tokens[idx];
      std::string out;
      size_t i = 0;
      bool first = true;
      while (i < t.size()) {
        if (!replacement_.empty() && t.compare(i, replacement_.size(), replacement_) == 0) {
          if (!(idx == 0 && first && strip_first_ && !ctx.continuation)) out.push_back(' ');
          i += replacement_.size();
        } else {
          size_t start = i;
          i += utf8_len(static_cast<unsigned char>(t[i]));
          out.append(t, start, i - start);
        }
        first = false;
      }
      t = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class WordPieceDecoder : public Decoder {
 public:
  explicit WordPieceDecoder(std::string prefix) : prefix_(std::move(prefix)) {}
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext& ctx) const override {
    for (size_t idx = 0; idx < tokens.size(); ++idx) {
      auto& t = tokens[idx];
      if (idx != 0 || ctx.continuation) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0) {
          t.erase(0, prefix_.size());
        } else {
          t = ' ' + t;
        }
      }
    }
  }

 private:
  std::string prefix_;
};

class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext&) const override {
    if (suffix_.empty()) return;
    for (size_t idx = 0; idx < tokens.size(); ++idx) {
      std::string& t = tokens[idx];
      std::string out;
      size_t pos = 0, hit;
      while ((hit = t.find(suffix_, pos)) != std::string::npos) {
        out.append(t, pos, hit - pos);
        if (idx + 1 != tokens.size()) out.push_back(' ');
        pos = hit + suffix_.size();
      }
      out.append(t, pos);
      t = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens, const DecodeContext& ctx) const override {
    for (const auto& p : parts_) p->decode_chain(tokens, ctx);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& config) {
  if (config.is_null()) return nullptr;
  std::string type = get_string(config, "type", "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        pattern_to_regex(require(config, "pattern", "decoder Replace"), "decoder Replace"),
        get_string(config, "content", "decoder Replace"));
  }
  if (type == "Strip") {
    const json& start = require(config, "start", "decoder Strip");
    const json& stop = require(config, "stop", "decoder Strip");
    IRIS_CHECK(start.is_number_unsigned() && stop.is_number_unsigned())
        << "tokenizer.json: decoder Strip start/stop must be non-negative integers";
    return std::make_unique<StripDecoder>(get_string(config, "content", "decoder Strip"),
                                          start.get<size_t>(), stop.get<size_t>());
  }
  if (type == "Metaspace") {
    std::string replacement = get_string(config, "replacement", "decoder Metaspace", "\u2581");
    bool strip_first = get_bool(config, "add_prefix_space", true);
    if (config.contains("prepend_scheme") && config["prepend_scheme"].is_string()) {
      strip_first = config["prepend_scheme"].get<std::string>() != "never";
    }
    return std::make_unique<MetaspaceDecoder>(replacement, strip_first);
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDecoder>(get_string(config, "prefix", "decoder WordPiece", "##"));
  }
  if (type == "BPEDecoder") {
    return std::make_unique<BpeSuffixDecoder>(get_string(config, "suffix", "decoder BPEDecoder", "</w>"));
  }
  if (type == "Sequence") {
    const json& list = require(config, "decoders", "decoder Sequence");
    IRIS_CHECK(list.is_array()) << "tokenizer.json: decoder Sequence.decoders must be a list";
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const auto& item : list) {
      if (auto d = make_decoder(item)) parts.push_back(std::move(d));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  fail("tokenizer.json: unsupported decoder type '", type, "'");
}

}  // namespace iris::tok
