// Unigram model (SentencePiece unigram vocabularies): Viterbi search over a byte trie of the
// pieces, maximizing the summed log-probabilities; characters no piece covers become the unk
// token (consecutive unknowns fused) or, with byte_fallback, <0xXX> byte tokens.
#include "engine/core/check.h"
#include "engine/tokenizer/components.h"
#include "engine/tokenizer/unicode.h"
#include "engine/tokenizer/vocab.h"

namespace iris::tok {
namespace {

class UnigramModel : public VocabModel<Model> {
 public:
  explicit UnigramModel(const json& config) {
    const json& vocab = require(config, "vocab", "model Unigram");
    IRIS_CHECK(vocab.is_array()) << "tokenizer.json: Unigram model.vocab must be a list of [piece, score]";
    scores_.reserve(vocab.size());
    min_score_ = 1e30;
    for (size_t i = 0; i < vocab.size(); ++i) {
      const json& e = vocab[i];
      IRIS_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_number())
          << "tokenizer.json: Unigram model.vocab[" << i << "] must be [piece, score]";
      std::string piece = e[0].get<std::string>();
      double score = e[1].get<double>();
      vocab_.add(piece, static_cast<int32_t>(i));
      scores_.push_back(score);
      min_score_ = std::min(min_score_, score);
      insert(piece, static_cast<int32_t>(i));
    }
    if (config.contains("unk_id") && config["unk_id"].is_number_integer()) {
      unk_id_ = config["unk_id"].get<int32_t>();
      IRIS_CHECK(*unk_id_ >= 0 && *unk_id_ < static_cast<int32_t>(vocab.size()))
          << "tokenizer.json: Unigram unk_id " << *unk_id_ << " is out of range";
    }
    byte_fallback_ = get_bool(config, "byte_fallback", false);
  }

  void tokenize(std::string_view s, std::vector<int32_t>& out) const override {
    const size_t n = s.size();
    struct Node {
      double score = 0;
      int64_t start = -1;
      int32_t id = -1;
    };
    std::vector<Node> best(n + 1);
    const double unk_score = min_score_ - 10.0;
    size_t pos = 0;
    while (pos < n) {
      double base = best[pos].score;
      size_t mblen = utf8_len(static_cast<unsigned char>(s[pos]));
      bool single = false;
      int32_t node = 0;
      for (size_t k = pos; k < n; ++k) {
        auto it = children_.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(s[k]));
        if (it == children_.end()) break;
        node = it->second;
        int32_t id = terminal_[node];
        if (id < 0) continue;
        Node& target = best[k + 1];
        double cand = base + scores_[id];
        if (target.start < 0 || cand > target.score) target = {cand, static_cast<int64_t>(pos), id};
        if (k + 1 - pos == mblen) single = true;
      }
      if (!single) {
        IRIS_CHECK(unk_id_.has_value()) << "Unigram: text needs the unk token but the model has no unk_id";
        Node& target = best[pos + mblen];
        double cand = base + unk_score;
        if (target.start < 0 || cand > target.score) target = {cand, static_cast<int64_t>(pos), *unk_id_};
      }
      pos += mblen;
    }
    std::vector<std::string_view> pieces;
    size_t end = n, unk_end = 0;
    bool in_unk = false;
    while (end > 0) {
      const Node& node = best[end];
      size_t start = static_cast<size_t>(node.start);
      if (unk_id_ && node.id == *unk_id_) {
        if (!in_unk) unk_end = end;
        in_unk = true;
      } else {
        if (in_unk) pieces.push_back(s.substr(end, unk_end - end));
        in_unk = false;
        pieces.push_back(s.substr(start, end - start));
      }
      end = start;
    }
    if (in_unk) pieces.push_back(s.substr(0, unk_end));
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
      if (const int32_t* id = vocab_.find(*it)) {
        out.push_back(*id);
        continue;
      }
      if (byte_fallback_) {
        std::vector<int32_t> bytes;
        for (unsigned char c : *it) {
          char name[8];
          std::snprintf(name, sizeof(name), "<0x%02X>", c);
          if (const int32_t* id = vocab_.find(name)) bytes.push_back(*id);
          else break;
        }
        if (bytes.size() == it->size()) {
          out.insert(out.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      IRIS_CHECK(unk_id_.has_value()) << "Unigram: text needs the unk token but the model has no unk_id";
      out.push_back(*unk_id_);
    }
  }

 private:
  void insert(const std::string& piece, int32_t id) {
    if (terminal_.empty()) terminal_.push_back(-1);
    int32_t node = 0;
    for (unsigned char c : piece) {
      uint64_t k = (static_cast<uint64_t>(node) << 8) | c;
      auto it = children_.find(k);
      if (it == children_.end()) {
        int32_t next = static_cast<int32_t>(terminal_.size());
        terminal_.push_back(-1);
        children_.emplace(k, next);
        node = next;
      } else {
        node = it->second;
      }
    }
    if (!piece.empty() && terminal_[node] < 0) terminal_[node] = id;
  }

  std::vector<double> scores_;
  double min_score_ = 0;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  std::unordered_map<uint64_t, int32_t> children_;  // (node << 8 | byte) -> child node
  std::vector<int32_t> terminal_;                   // node -> piece id, -1 if none
};

}  // namespace

std::unique_ptr<Model> make_unigram_model(const json& config) {
  return std::make_unique<UnigramModel>(config);
}

}  // namespace iris::tok
