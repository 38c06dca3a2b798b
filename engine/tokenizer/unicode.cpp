// UTF-8 and Unicode helpers. Character properties come from ICU (exact White_Space and
// Alphabetic properties, full lowercase mapping); normalization forms come from utf8proc.
#include "engine/tokenizer/unicode.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "engine/core/check.h"

namespace iris::tok {

char32_t next_code_point(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  unsigned char c = p[0];
  if (c < 0x80) {
    i += 1;
    return c;
  }
  if (c < 0xE0) {
    i += 2;
    return ((c & 0x1F) << 6) | (p[1] & 0x3F);
  }
  if (c < 0xF0) {
    i += 3;
    return ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
  }
  i += 4;
  return ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {
// Length of the valid UTF-8 sequence at s[i], 0 if invalid; *prefix_len receives how many bytes
// form a valid prefix (the "maximal subpart" that one U+FFFD replaces).
size_t valid_sequence(std::string_view s, size_t i, size_t* prefix_len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  unsigned char c = p[i];
  *prefix_len = 1;
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= n) return 0;
    unsigned char b = p[i + k];
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    *prefix_len = k + 1;
  }
  return len;
}
}  // namespace

bool is_valid_utf8(std::string_view s) {
  size_t i = 0, prefix;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t len = valid_sequence(s, i, &prefix);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0, prefix;
  while (i < s.size()) {
    size_t len = valid_sequence(s, i, &prefix);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      i += prefix;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

size_t incomplete_utf8_tail(std::string_view s) {
  size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    size_t i = n - back;
    auto c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    if (c < 0x80) return 0;
    size_t prefix;
    if (utf8_len(c) <= back) return 0;  // complete (or invalid: not ours to hold)
    valid_sequence(s, i, &prefix);
    return prefix == back ? back : 0;
  }
  return 0;
}

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      append_utf8(t[b], printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++));
    }
    return t;
  }();
  return table;
}

int unicode_to_byte(char32_t cp) {
  static const std::vector<int> table = [] {
    std::vector<int> t(512, -1);
    const auto& fwd = byte_to_unicode();
    for (int b = 0; b < 256; ++b) {
      size_t i = 0;
      t[next_code_point(fwd[b], i)] = b;
    }
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

bool is_whitespace(char32_t cp) { return u_hasBinaryProperty(cp, UCHAR_WHITE_SPACE); }

bool is_numeric(char32_t cp) {
  auto cat = u_charType(cp);
  return cat == U_DECIMAL_DIGIT_NUMBER || cat == U_LETTER_NUMBER || cat == U_OTHER_NUMBER;
}

bool is_alphanumeric(char32_t cp) {
  return u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) || is_numeric(cp);
}

bool is_punctuation(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
           (cp >= 123 && cp <= 126);
  }
  return u_ispunct(cp);
}

bool is_combining_mark(char32_t cp) {
  auto cat = u_charType(cp);
  return cat == U_NON_SPACING_MARK || cat == U_COMBINING_SPACING_MARK || cat == U_ENCLOSING_MARK;
}

bool is_control(char32_t cp) {
  auto cat = u_charType(cp);
  return cat == U_CONTROL_CHAR || cat == U_FORMAT_CHAR || cat == U_PRIVATE_USE_CHAR ||
         cat == U_UNASSIGNED || cat == U_SURROGATE;
}

std::string unicode_normalize(std::string_view s, NormalForm form) {
  if (s.empty()) return {};
  int options = UTF8PROC_STABLE;
  switch (form) {
    case NormalForm::NFC: options |= UTF8PROC_COMPOSE; break;
    case NormalForm::NFD: options |= UTF8PROC_DECOMPOSE; break;
    case NormalForm::NFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormalForm::NFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out,
                                    static_cast<utf8proc_option_t>(options));
  IRIS_CHECK(n >= 0) << "unicode normalization failed: " << utf8proc_errmsg(n);
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

std::string unicode_lowercase(std::string_view s) {
  bool ascii = true;
  for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) {
    std::string out(s);
    for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    return out;
  }
  UErrorCode err = U_ZERO_ERROR;
  int32_t len16 = 0;
  u_strFromUTF8(nullptr, 0, &len16, s.data(), static_cast<int32_t>(s.size()), &err);
  std::u16string in(static_cast<size_t>(len16), u'\0');
  err = U_ZERO_ERROR;
  u_strFromUTF8(in.data(), len16, nullptr, s.data(), static_cast<int32_t>(s.size()), &err);
  IRIS_CHECK(U_SUCCESS(err)) << "lowercase: invalid UTF-8";
  std::u16string lower(in.size() * 3 + 4, u'\0');
  err = U_ZERO_ERROR;
  int32_t n = u_strToLower(lower.data(), static_cast<int32_t>(lower.size()), in.data(),
                           static_cast<int32_t>(in.size()), "", &err);
  IRIS_CHECK(U_SUCCESS(err)) << "lowercase failed";
  std::string out;
  int32_t len8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(nullptr, 0, &len8, lower.data(), n, &err);
  out.resize(static_cast<size_t>(len8));
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), len8, nullptr, lower.data(), n, &err);
  return out;
}

}  // namespace iris::tok
