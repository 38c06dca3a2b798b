// Public tokenizer API: a Hugging Face–compatible tokenizer built from tokenizer.json (plus the
// optional tokenizer_config.json), and a streaming detokenizer for generated ids.
//
// The contract is "same ids as Hugging Face `tokenizers` for the same files": added tokens are
// split out first, each remaining section is normalized, pre-tokenized and run through the
// model, then the post-processor adds the template's special tokens. Everything below the API
// lives in engine/tokenizer/*.cpp, one pipeline stage per file.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iris {

class Tokenizer {
 public:
  // Reads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json.
  static std::unique_ptr<Tokenizer> from_dir(const std::string& dir);
  // Builds from the JSON texts themselves; an empty config means "no tokenizer_config.json".
  static std::unique_ptr<Tokenizer> from_json(const std::string& tokenizer_json,
                                              const std::string& tokenizer_config_json = "");
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // As HF `encode(text, add_special_tokens=...)`. With parse_special=false, text that spells a
  // special added token is tokenized as plain text (non-special added tokens, which are part of
  // ordinary tokenization for some vocabularies, still match) — HF's `encode_special_tokens`.
  // Invalid UTF-8 in `text` is replaced by U+FFFD before tokenization (HF only accepts valid
  // strings). Thread-safe.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true,
                              bool parse_special = true) const;
  // As encode(text, add_special_tokens, /*parse_special=*/true), except that special tokens
  // overlapping one of the `literal` byte ranges stay plain text: a rendered chat prompt whose
  // template markup is special but whose message contents (the ranges) are user text.
  std::vector<int32_t> encode_with_literals(
      std::string_view text, bool add_special_tokens,
      const std::vector<std::pair<size_t, size_t>>& literal) const;
  // True when `text` contains the spelling of a special added token.
  bool contains_special_token(std::string_view text) const;
  // As HF `decode(ids, skip_special_tokens=...)` of the `tokenizers` library (no
  // clean_up_tokenization_spaces). Unknown ids are skipped, as HF does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // As transformers' `tokenizer.decode(ids, skip_special_tokens=...)`: decode(), then
  // clean_up_tokenization() when tokenizer_config.json sets clean_up_tokenization_spaces.
  // Streamed output keeps decode()'s text (as vLLM streams); one-shot detokenization uses this.
  std::string decode_like_transformers(const std::vector<int32_t>& ids,
                                       bool skip_special_tokens = false) const;
  bool clean_up_tokenization_spaces() const;

  int32_t vocab_size() const;  // max id + 1 over the model vocab and the added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // empty for an unknown id
  bool is_special(int32_t id) const;
  // The raw bytes token `id` contributes when it follows earlier text: GPT-2 byte-level symbols
  // mapped back to their bytes (possibly part of a UTF-8 character), `<0xNN>` byte-fallback
  // tokens as that byte, SentencePiece's `▁` as a space. nullopt for special tokens and
  // unknown ids. Used to match tokens against byte-level grammars.
  std::optional<std::string> token_bytes(int32_t id) const;

  // From tokenizer_config.json where present; empty when absent.
  const std::string& bos_token() const;
  const std::string& eos_token() const;
  const std::string& pad_token() const;
  const std::string& unk_token() const;
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;

  struct Impl;
  // Decodes with `continuation` semantics: the first token is treated as following earlier
  // text (no leading-space strip of SentencePiece decoders). Used by IncrementalDetokenizer.
  std::string decode_continuation(const int32_t* ids, size_t n, bool skip_special_tokens,
                                  bool continuation) const;
  // True when the bytes these ids decode to end inside a UTF-8 character (a byte-fallback or
  // byte-level token run still waiting for its continuation bytes).
  bool ends_inside_character(const int32_t* ids, size_t n) const;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::vector<int32_t> encode_impl(std::string_view text, bool add_special_tokens,
                                   bool parse_special,
                                   const std::vector<std::pair<size_t, size_t>>* literal) const;
  std::unique_ptr<Impl> impl_;
};

// transformers' clean_up_tokenization: " ." -> ".", " n't" -> "n't", ... (English spacing
// artefacts of old word-level tokenizers).
std::string clean_up_tokenization(std::string_view text);

// Streaming detokenizer: feed generated ids one at a time and get back only complete UTF-8 text.
// It decodes a short window of previous tokens and emits the difference (the prefix/read offset
// technique of vLLM and TGI), so byte-fallback pieces and SentencePiece leading spaces come out
// exactly as a full decode would. Stop strings may span token boundaries; text that could still
// be the start of a stop string is held back until resolved, and the stop text itself and
// everything after it is never emitted. Every piece it returns is whole UTF-8 characters.
//
// min_tokens: a stop string counts only when its match ends in text produced after the first
// `min_tokens` pushed ids (the text an id produces is what becomes decodable when it arrives,
// so a character split over ids belongs to the id that completes it). A match that lies wholly
// within that text is ignored and streamed as ordinary text; one that starts there and ends
// later counts. This is vLLM's rule: stop strings are checked only from the token after
// min_tokens on, against the text that token added.
//
// The concatenation of all returned text, flush() included, is the decode of every pushed id
// (after the prompt), cut before the first stop-string match that counts.
class IncrementalDetokenizer {
 public:
  struct Delta {
    std::string text;
    bool stopped = false;
    std::string matched_stop;
  };

  // `prompt_ids` (may be empty) gives the context the output continues; it is not emitted.
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::vector<int32_t> prompt_ids,
                         std::vector<std::string> stop_strings, bool skip_special_tokens,
                         int min_tokens = 0);

  // Every generated id, special or not, counts towards min_tokens.
  Delta push(int32_t id);
  // Emits whatever is still held back (an incomplete character, a partial stop string) at the
  // end of generation, whatever ended it. Returns "" once stopped.
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::string decode_range(size_t begin, size_t end) const;
  Delta release(std::string text, bool final);

  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
  size_t first_generated_ = 0;  // ids_[0, first_generated_) is the prompt
  std::vector<std::string> stop_strings_;
  bool skip_special_tokens_;
  std::string held_;  // decoded but not yet emitted (possible start of a stop string)
  bool stopped_ = false;
  int min_tokens_ = 0;
  int pushed_ = 0;          // ids pushed so far
  size_t emitted_ = 0;      // bytes returned so far; held_ starts there
  size_t match_floor_ = 0;  // a stop-string match must end beyond this byte of the output
};

}  // namespace iris
