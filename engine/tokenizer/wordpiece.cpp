// WordPiece model (BERT family): greedy longest-match-first over each pre-token, continuation
// pieces carry the "##" prefix, and a word with any unmatched span becomes the unk token.
// Also hosts make_model(), which picks the model implementation from model.type.
#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"

namespace iris::tok {

std::unique_ptr<Model> make_bpe_model(const json& config);
std::unique_ptr<Model> make_unigram_model(const json& config);

namespace {

class WordPieceModel : public VocabModel<Model> {
 public:
  explicit WordPieceModel(const json& config) {
    const json& vocab = require(config, "vocab", "model WordPiece");
    IRIS_CHECK(vocab.is_object()) << "tokenizer.json: WordPiece model.vocab must be an object";
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      IRIS_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0)
          << "tokenizer.json: model.vocab['" << it.key() << "'] must be a non-negative integer";
      vocab_.add(it.key(), it.value().get<int32_t>());
    }
    unk_ = get_string(config, "unk_token", "model WordPiece", "[UNK]");
    prefix_ = get_string(config, "continuing_subword_prefix", "model WordPiece", "##");
    if (config.contains("max_input_chars_per_word") && config["max_input_chars_per_word"].is_number_integer()) {
      max_chars_ = config["max_input_chars_per_word"].get<size_t>();
    }
  }
  void tokenize(std::string_view word, std::vector<int32_t>& out) const override {
    size_t chars = 0;
    for (unsigned char c : word) chars += (c & 0xC0) != 0x80;
    const int32_t* unk = vocab_.find(unk_);
    IRIS_CHECK(unk) << "tokenizer.json: WordPiece unk_token '" << unk_ << "' is not in the vocab";
    if (chars > max_chars_) {
      out.push_back(*unk);
      return;
    }
    std::vector<int32_t> pieces;
    size_t start = 0;
    std::string candidate;
    while (start < word.size()) {
      size_t end = word.size();
      const int32_t* found = nullptr;
      while (start < end) {
        candidate.assign(start > 0 ? prefix_ : std::string());
        candidate.append(word.substr(start, end - start));
        if ((found = vocab_.find(candidate))) break;
        do {
          --end;
        } while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (!found) {
        out.push_back(*unk);
        return;
      }
      pieces.push_back(*found);
      start = end;
    }
    out.insert(out.end(), pieces.begin(), pieces.end());
  }

 private:
  std::string unk_, prefix_;
  size_t max_chars_ = 100;
};

}  // namespace

std::unique_ptr<Model> make_model(const json& config) {
  IRIS_CHECK(config.is_object()) << "tokenizer.json: 'model' must be an object";
  std::string type;
  if (config.contains("type")) {
    type = get_string(config, "type", "model");
  } else if (config.contains("merges")) {
    type = "BPE";  // old files omit the type
  } else if (config.contains("vocab") && config["vocab"].is_array()) {
    type = "Unigram";
  } else {
    type = "WordPiece";
  }
  if (type == "BPE") return make_bpe_model(config);
  if (type == "WordPiece") return std::make_unique<WordPieceModel>(config);
  if (type == "Unigram") return make_unigram_model(config);
  fail("tokenizer.json: unsupported model type '", type, "'");
}

}  // namespace iris::tok
