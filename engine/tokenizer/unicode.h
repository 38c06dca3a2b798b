// UTF-8 and Unicode helpers shared by the tokenizer stages: decoding/encoding code points,
// repairing invalid UTF-8, the GPT-2 byte<->unicode table, and the character predicates that
// Rust's `char` methods provide (which is what HF's tokenizers use).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace iris::tok {

// Decodes the code point at s[i] and advances i. The input must be valid UTF-8.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);
inline size_t utf8_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

bool is_valid_utf8(std::string_view s);
// Replaces each maximal invalid subpart with U+FFFD, as Rust's String::from_utf8_lossy and
// the WHATWG decoder do.
std::string to_valid_utf8(std::string_view s);
// Length of a trailing, incomplete-but-valid-so-far UTF-8 sequence (0 when s ends cleanly).
size_t incomplete_utf8_tail(std::string_view s);

// GPT-2 ByteLevel alphabet: each byte maps to one printable code point.
const std::array<std::string, 256>& byte_to_unicode();
int unicode_to_byte(char32_t cp);  // -1 when cp is not in the alphabet

bool is_whitespace(char32_t cp);    // Unicode White_Space (Rust char::is_whitespace)
bool is_alphanumeric(char32_t cp);  // Alphabetic or Numeric (Rust char::is_alphanumeric)
bool is_numeric(char32_t cp);       // Nd, Nl, No (Rust char::is_numeric)
bool is_punctuation(char32_t cp);   // ASCII punctuation or general category P*
bool is_combining_mark(char32_t cp);  // Mn, Mc, Me
bool is_control(char32_t cp);       // general category Cc, Cf, Co, Cn, Cs (BERT's notion)

enum class NormalForm { NFC, NFD, NFKC, NFKD };
std::string unicode_normalize(std::string_view s, NormalForm form);
std::string unicode_lowercase(std::string_view s);  // full case mapping (final sigma included)

}  // namespace iris::tok
