// Normalizers: the text rewrites HF applies to each non-added-token section before
// pre-tokenization (Unicode forms, Replace, Prepend, Strip, Lowercase, BERT's cleanup, ...).
#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/regex.h"
#include "engine/tokenizer/unicode.h"

namespace iris::tok {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& s) const override {
    for (const auto& p : parts_) p->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& s) const override {
    bool ascii = true;
    for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (!ascii) s = unicode_normalize(s, form_);
  }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = unicode_lowercase(s); }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& s) const override {
    size_t begin = 0, end = s.size();
    if (left_) {
      size_t i = 0;
      while (i < s.size()) {
        size_t j = i;
        if (!is_whitespace(next_code_point(s, j))) break;
        i = j;
      }
      begin = i;
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t j = start;
        if (!is_whitespace(next_code_point(s, j))) break;
        end = start;
      }
    }
    s = s.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      size_t start = i;
      char32_t cp = next_code_point(s, i);
      if (!is_combining_mark(cp)) out.append(s, start, i - start);
    }
    s = std::move(out);
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const std::string& regex, std::string content)
      : regex_(regex), content_(std::move(content)) {}
  void normalize(std::string& s) const override { s = regex_.replace_all(s, content_); }

 private:
  Regex regex_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s = prefix_ + s;
  }

 private:
  std::string prefix_;
};

// Maps every byte to the GPT-2 byte-level alphabet (HF's ByteLevel normalizer).
class ByteLevelNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override {
    const auto& table = byte_to_unicode();
    std::string out;
    out.reserve(s.size() * 2);
    for (unsigned char c : s) out += table[c];
    s = std::move(out);
  }
};

bool is_chinese_char(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text), chinese_(chinese), strip_accents_(strip_accents),
        lowercase_(lowercase) {}
  void normalize(std::string& s) const override {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      size_t start = i;
      char32_t cp = next_code_point(s, i);
      if (clean_text_) {
        if (cp == 0 || cp == 0xFFFD || (cp != '\t' && cp != '\n' && cp != '\r' && is_control(cp)))
          continue;
        if (is_whitespace(cp)) {
          out.push_back(' ');
          continue;
        }
      }
      if (chinese_ && is_chinese_char(cp)) {
        out.push_back(' ');
        out.append(s, start, i - start);
        out.push_back(' ');
        continue;
      }
      out.append(s, start, i - start);
    }
    if (strip_accents_) {
      out = unicode_normalize(out, NormalForm::NFD);
      StripAccentsNormalizer().normalize(out);
    }
    if (lowercase_) out = unicode_lowercase(out);
    s = std::move(out);
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& config) {
  if (config.is_null()) return nullptr;
  std::string type = get_string(config, "type", "normalizer");
  if (type == "Sequence") {
    const json& list = require(config, "normalizers", "normalizer Sequence");
    IRIS_CHECK(list.is_array()) << "tokenizer.json: normalizer Sequence.normalizers must be a list";
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& item : list) {
      if (auto n = make_normalizer(item)) parts.push_back(std::move(n));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(get_bool(config, "strip_left", true),
                                             get_bool(config, "strip_right", true));
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(
        pattern_to_regex(require(config, "pattern", "normalizer Replace"), "normalizer Replace"),
        get_string(config, "content", "normalizer Replace"));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(get_string(config, "prepend", "normalizer Prepend"));
  }
  if (type == "BertNormalizer") {
    bool lowercase = get_bool(config, "lowercase", true);
    auto sa = config.find("strip_accents");
    bool strip = (sa == config.end() || sa->is_null()) ? lowercase : get_bool(config, "strip_accents", lowercase);
    return std::make_unique<BertNormalizer>(get_bool(config, "clean_text", true),
                                            get_bool(config, "handle_chinese_chars", true), strip,
                                            lowercase);
  }
  fail("tokenizer.json: unsupported normalizer type '", type, "'");
}

}  // namespace iris::tok
