// IncrementalDetokenizer: streaming decode with the prefix/read offset technique. Each push
// decodes ids_[prefix_offset_, end) and ids_[prefix_offset_, read_offset_) and emits the
// difference once the ids no longer end inside a UTF-8 character (checked on the raw bytes
// of the last tokens, so a real U+FFFD in the output is not mistaken for one). Windows that do not
// start at the first id are decoded in "continuation" mode, so SentencePiece decoders keep the
// leading space that a full decode would have kept. Emitted text then passes the stop-string
// filter, which holds back any suffix that could still grow into a stop string and ignores
// matches that end within the text of the first min_tokens ids.
#include "engine/tokenizer/tokenizer.h"

namespace iris {
namespace {
constexpr size_t kInitialWindow = 5;  // prompt tokens of context for the first decode (vLLM)


// Where the new text starts in the window decode. Normally `prefix` is a prefix of `full`; with
// invalid byte sequences (HF turns every byte of an invalid byte-fallback run into U+FFFD) more
// bytes can change how earlier text decodes, so fall back to the common prefix, moved back to
// a character boundary so the emitted text stays valid UTF-8.
size_t new_text_start(const std::string& prefix, const std::string& full) {
  if (full.compare(0, prefix.size(), prefix) == 0) return prefix.size();
  size_t n = 0;
  while (n < prefix.size() && n < full.size() && prefix[n] == full[n]) ++n;
  while (n > 0 && n < full.size() && (static_cast<unsigned char>(full[n]) & 0xC0) == 0x80) --n;
  return n;
}

bool starts_character(char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }
}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::vector<int32_t> prompt_ids,
                                               std::vector<std::string> stop_strings,
                                               bool skip_special_tokens, int min_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens), min_tokens_(min_tokens) {
  for (int32_t id : prompt_ids) {
    if (!(skip_special_tokens_ && tokenizer_.is_special(id))) ids_.push_back(id);
  }
  for (auto& s : stop_strings) {
    if (!s.empty()) stop_strings_.push_back(std::move(s));
  }
  first_generated_ = ids_.size();
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > kInitialWindow ? ids_.size() - kInitialWindow : 0;
}

std::string IncrementalDetokenizer::decode_range(size_t begin, size_t end) const {
  if (begin >= end) return {};
  return tokenizer_.decode_continuation(ids_.data() + begin, end - begin, skip_special_tokens_,
                                        /*continuation=*/begin != 0);
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::push(int32_t id) {
  if (stopped_) return {"", true, ""};
  ++pushed_;
  if (skip_special_tokens_ && tokenizer_.is_special(id)) return release("", false);
  ids_.push_back(id);
  std::string prefix_text = decode_range(prefix_offset_, read_offset_);
  std::string new_text = decode_range(prefix_offset_, ids_.size());
  if (new_text.size() > prefix_text.size() &&
      !tokenizer_.ends_inside_character(ids_.data(), ids_.size())) {
    std::string delta = new_text.substr(new_text_start(prefix_text, new_text));
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    return release(std::move(delta), false);
  }
  return release("", false);
}

std::string IncrementalDetokenizer::flush() {
  if (stopped_) return {};
  std::string delta;
  if (read_offset_ < ids_.size()) {
    std::string prefix_text = decode_range(prefix_offset_, read_offset_);
    std::string new_text = decode_range(prefix_offset_, ids_.size());
    if (new_text.size() > prefix_text.size()) {
      delta = new_text.substr(new_text_start(prefix_text, new_text));
    }
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
  }
  return release(std::move(delta), true).text;
}

IncrementalDetokenizer::Delta IncrementalDetokenizer::release(std::string text, bool final) {
  held_ += text;
  // Text that arrives with one of the first min_tokens ids cannot end a stop string.
  if (pushed_ <= min_tokens_) match_floor_ = emitted_ + held_.size();
  const size_t floor = match_floor_ > emitted_ ? match_floor_ - emitted_ : 0;  // within held_
  size_t best_pos = std::string::npos;
  const std::string* best = nullptr;
  for (const auto& s : stop_strings_) {
    // Only matches that end beyond `floor` and start on a character (a stop string that is
    // not valid UTF-8 must not cut a character in two).
    size_t p = held_.find(s, floor >= s.size() ? floor - s.size() + 1 : 0);
    while (p != std::string::npos && !starts_character(held_[p])) p = held_.find(s, p + 1);
    if (p == std::string::npos) continue;
    if (p < best_pos || (p == best_pos && s.size() > best->size())) {
      best_pos = p;
      best = &s;
    }
  }
  Delta d;
  if (best) {
    d.text = held_.substr(0, best_pos);
    d.stopped = true;
    d.matched_stop = *best;
    emitted_ += d.text.size();
    held_.clear();
    stopped_ = true;
    return d;
  }
  // Hold back the longest suffix that is a proper prefix of a stop string (it starts on a
  // character, so what is released stays whole characters).
  size_t keep = 0;
  if (!final) {
    for (const auto& s : stop_strings_) {
      for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
        if (starts_character(held_[held_.size() - k]) &&
            held_.compare(held_.size() - k, k, s, 0, k) == 0) {
          keep = k;
          break;
        }
      }
    }
  }
  d.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  emitted_ += d.text.size();
  return d;
}

}  // namespace iris
