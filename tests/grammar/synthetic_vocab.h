// A synthetic byte-level BPE tokenizer.json with a vocabulary the size of current models'
// (about 150k tokens, Qwen2-like ids), for constraint tests and benchmarks without a model hub.
// The vocabulary is deterministic: the 256 byte symbols, common English words and pseudo-words
// with and without a leading space and capitalised, numbers, runs of spaces and newlines,
// punctuation clusters (the JSON-shaped ones real vocabularies are full of, quotes and
// backslashes included), and multi-byte UTF-8 pieces, some of them partial characters.
// Only the vocabulary matters for masks; the merges list is empty.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace iris::test {

// GPT-2's byte → printable code point mapping, as UTF-8.
inline std::string gpt2_symbol(uint8_t b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int extra = 0;
    for (int c = 0; c < 256; ++c) {
      const bool printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
      const int cp = printable ? c : 256 + extra++;
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      t[c] = s;
    }
    return t;
  }();
  return table[b];
}

inline std::string gpt2_encode(const std::string& bytes) {
  std::string out;
  for (char c : bytes) out += gpt2_symbol(static_cast<uint8_t>(c));
  return out;
}

// `num_tokens` ordinary tokens (ids 0..num_tokens-1), then special tokens <|endoftext|>
// (= EOS), <|im_start|>, <|im_end|>.
inline std::string synthetic_bytelevel_json(int num_tokens = 150000, uint32_t seed = 7) {
  std::vector<std::string> raw;  // token byte strings, in id order
  std::set<std::string> seen;
  auto add = [&](const std::string& s) {
    if (static_cast<int>(raw.size()) >= num_tokens || s.empty()) return;
    if (seen.insert(s).second) raw.push_back(s);
  };
  for (int b = 0; b < 256; ++b) add(std::string(1, static_cast<char>(b)));
  static const char* kWords[] = {
      "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
      "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
      "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
      "been", "if", "more", "when", "will", "would", "who", "so", "no", "name", "age", "email",
      "id", "type", "value", "true", "false", "null", "items", "data", "title", "description",
      "date", "time", "user", "address", "street", "city", "country", "price", "count", "list",
      "status", "result", "error", "message", "code", "key", "tags", "url", "phone", "first",
      "last", "created", "updated", "amount", "currency", "order", "product", "quantity",
      "children", "parent", "node", "left", "right", "score", "level", "enabled", "version"};
  std::vector<std::string> words(std::begin(kWords), std::end(kWords));
  const std::string punct = "{}[]\":,.-_/\\ '()!?;*#@$%&+=<>|~`^";
  for (char a : punct) add(std::string(1, a));
  for (char a : punct)
    for (char b : punct) add(std::string{a, b});
  for (int n = 1; n <= 64; ++n) add(std::string(static_cast<size_t>(n), ' '));
  for (int n = 1; n <= 8; ++n) {
    add(std::string(static_cast<size_t>(n), '\n'));
    for (int k = 1; k <= 24; ++k) add(std::string(static_cast<size_t>(n), '\n') + std::string(static_cast<size_t>(k), ' '));
  }
  for (int n = 0; n < 1000; ++n) {
    add(std::to_string(n));
    std::string spaced = " ";  // (not `" " + to_string(n)`: a -Wrestrict false positive in g++ 12)
    spaced += std::to_string(n);
    add(spaced);
  }
  for (const std::string& w : words) {
    std::string cap = w;
    cap[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(cap[0])));
    for (const std::string& v : {w, " " + w, cap, " " + cap, "\"" + w + "\"", "\"" + w + "\":",
                                 "{\"" + w + "\":", ",\"" + w + "\":", "\"" + w, w + "\"", " \"" + w + "\":"})
      add(v);
  }
  for (char a : punct)
    for (char b : punct)
      for (char c : std::string("{}[]\":, \\n")) add(std::string{a, b, c});
  std::mt19937 rng(seed);
  // Multi-byte UTF-8: whole characters (Latin-1, Greek, CJK, emoji) and partial ones.
  for (int i = 0; i < 6000; ++i) {
    uint32_t cp = i % 4 == 0 ? 0xA0 + rng() % 0x160 : i % 4 == 1 ? 0x4E00 + rng() % 0x5000
                  : i % 4 == 2 ? 0x391 + rng() % 0x40 : 0x1F600 + rng() % 0x50;
    std::string s;
    if (cp < 0x800) {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    add(s);
    add(s.substr(0, s.size() - 1));  // a partial character
    add(" " + s);
  }
  // Pseudo-words from syllables until the vocabulary is full.
  static const char* kOnsets[] = {"", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p",
                                  "r", "s", "t", "v", "w", "z", "br", "ch", "cl", "cr", "dr",
                                  "fl", "gr", "pl", "pr", "sh", "st", "str", "th", "tr"};
  static const char* kVowels[] = {"a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "y"};
  static const char* kCodas[] = {"", "n", "r", "s", "t", "l", "m", "ng", "st", "nd", "ck", "tion",
                                 "ing", "ed", "er", "ly"};
  auto syllable = [&] {
    return std::string(kOnsets[rng() % std::size(kOnsets)]) + kVowels[rng() % std::size(kVowels)] +
           kCodas[rng() % std::size(kCodas)];
  };
  while (static_cast<int>(raw.size()) < num_tokens) {
    std::string w = syllable();
    const int extra = static_cast<int>(rng() % 3);
    for (int k = 0; k < extra; ++k) w += syllable();
    switch (rng() % 8) {
      case 0: case 1: case 2: add(" " + w); break;
      case 3: case 4: add(w); break;
      case 5: w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0]))); add(" " + w); break;
      case 6: add("_" + w); break;
      default: add("\"" + w); break;
    }
  }
  nlohmann::json vocab = nlohmann::json::object();
  for (size_t i = 0; i < raw.size(); ++i) vocab[gpt2_encode(raw[i])] = static_cast<int>(i);
  const int n = static_cast<int>(raw.size());
  nlohmann::json added = nlohmann::json::array();
  int id = n;
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    added.push_back({{"id", id++}, {"content", t}, {"special", true}, {"normalized", false}});
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  return j.dump();
}

}  // namespace iris::test
