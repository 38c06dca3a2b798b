// Small tokenizer.json documents built in code for unit and fuzz tests, so those run without
// the npm reference packages: a SentencePiece-style BPE with byte_fallback (Llama-2 layout) and
// a GPT-2-style byte-level BPE (Llama-3 layout).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace iris::test {

// Llama-2 layout: Prepend("▁") + Replace(" ", "▁"), byte_fallback, <s> template.
inline std::string tiny_sentencepiece_json() {
  using nlohmann::json;
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"\u2581", "a", "b", "c", "s", "t", "o", "p", "h", "e", "r", "\u2581a", "ab",
                        "\u2581ab", "st", "op", "\u2581st", "\u2581stop", "\u2581h", "er", "\u2581her",
                        "\u2581here", "\u2581s", "sto", "stop"}) {
    vocab[t] = id++;
  }
  json merges = json::array({"\u2581 a", "a b", "\u2581a b", "s t", "o p", "\u2581 st", "st op",
                             "\u2581st op", "\u2581 h", "e r", "\u2581h er", "\u2581her e", "\u2581 s",
                             "st o", "sto p"});
  json j = {
      {"version", "1.0"},
      {"added_tokens",
       json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
                    {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                    {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                     {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                      {{"type", "ByteFallback"}},
                      {{"type", "Fuse"}},
                      {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
        {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

// Llama-3 layout: Split(regex) + ByteLevel, ByteLevel decoder, a few added tokens.
inline std::string tiny_bytelevel_json() {
  using nlohmann::json;
  json vocab = json::object();
  // The 256 single-byte symbols of the GPT-2 alphabet, ids 0..255.
  int id = 0;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = printable ? b : 256 + extra++;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    vocab[s] = id++;
  }
  for (const char* t : {"\u0120t", "he", "\u0120the", "in", "\u0120a", "er", "\u0120\u0120", "on"}) {
    vocab[t] = id++;
  }
  json merges = json::array({"\u0120 t", "h e", "\u0120t he", "i n", "\u0120 a", "e r",
                             "\u0120 \u0120", "o n"});
  const char* pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  json j = {
      {"added_tokens",
       json::array({{{"id", 300}, {"content", "<|begin_of_text|>"}, {"special", true}, {"normalized", false}},
                    {{"id", 301}, {"content", "<|end_of_text|>"}, {"special", true}, {"normalized", false}},
                    {{"id", 302}, {"content", "<tool>"}, {"special", false}, {"normalized", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens",
         {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {300}}, {"tokens", {"<|begin_of_text|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", merges}}}};
  return j.dump();
}

}  // namespace iris::test
