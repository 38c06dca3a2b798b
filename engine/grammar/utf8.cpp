// Code point sets and the split of code point ranges into UTF-8 byte-range sequences: a range
// is cut at encoding-length boundaries and then wherever its continuation bytes would not cover
// their full 0x80–0xBF span, until each piece is a product of per-byte ranges.
#include "engine/grammar/utf8.h"

#include "engine/tokenizer/unicode.h"

#include <algorithm>

namespace iris::grammar {

void CodepointSet::add(uint32_t lo, uint32_t hi) {
  if (lo > hi) return;
  hi = std::min(hi, kMaxCodepoint);
  if (lo > hi) return;
  std::vector<std::pair<uint32_t, uint32_t>> out;
  bool placed = false;
  for (const auto& r : ranges_) {
    if (r.second + 1 < lo) {
      out.push_back(r);
    } else if (hi + 1 < r.first) {
      if (!placed) out.emplace_back(lo, hi), placed = true;
      out.push_back(r);
    } else {
      lo = std::min(lo, r.first);
      hi = std::max(hi, r.second);
    }
  }
  if (!placed) out.emplace_back(lo, hi);
  std::sort(out.begin(), out.end());
  ranges_ = std::move(out);
}

void CodepointSet::add(const CodepointSet& other) {
  for (const auto& r : other.ranges_) add(r.first, r.second);
}

void CodepointSet::remove(uint32_t lo, uint32_t hi) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (const auto& r : ranges_) {
    if (r.second < lo || r.first > hi) {
      out.push_back(r);
      continue;
    }
    if (r.first < lo) out.emplace_back(r.first, lo - 1);
    if (r.second > hi) out.emplace_back(hi + 1, r.second);
  }
  ranges_ = std::move(out);
}

CodepointSet CodepointSet::complement() const {
  CodepointSet c;
  uint32_t next = 0;
  for (const auto& r : ranges_) {
    if (r.first > next) c.ranges_.emplace_back(next, r.first - 1);
    next = r.second + 1;
  }
  if (next <= kMaxCodepoint) c.ranges_.emplace_back(next, kMaxCodepoint);
  return c;
}

bool CodepointSet::contains(uint32_t c) const {
  for (const auto& r : ranges_)
    if (c >= r.first && c <= r.second) return true;
  return false;
}

void append_utf8(std::string& out, uint32_t cp) { tok::append_utf8(out, static_cast<char32_t>(cp)); }

bool next_utf8(std::string_view s, size_t& i, uint32_t& cp) {
  if (i >= s.size()) return false;
  const auto b0 = static_cast<uint8_t>(s[i]);
  int len = 0;
  uint32_t c = 0;
  if (b0 < 0x80) len = 1, c = b0;
  else if (b0 >= 0xC2 && b0 <= 0xDF) len = 2, c = b0 & 0x1F;
  else if (b0 >= 0xE0 && b0 <= 0xEF) len = 3, c = b0 & 0x0F;
  else if (b0 >= 0xF0 && b0 <= 0xF4) len = 4, c = b0 & 0x07;
  else return false;
  if (i + len > s.size()) return false;
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return false;
    c = (c << 6) | (b & 0x3F);
  }
  if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
      c > kMaxCodepoint || (c >= 0xD800 && c <= 0xDFFF))
    return false;
  cp = c;
  i += len;
  return true;
}

namespace {

using ByteRanges = std::vector<std::pair<uint8_t, uint8_t>>;

int utf8_length(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

void split_same_length(uint32_t lo, uint32_t hi, std::vector<ByteRanges>& out) {
  const int n = utf8_length(lo);
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        split_same_length(lo, lo | m, out);
        split_same_length((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        split_same_length(lo, (hi & ~m) - 1, out);
        split_same_length(hi & ~m, hi, out);
        return;
      }
    }
  }
  std::string a, b;
  append_utf8(a, lo);
  append_utf8(b, hi);
  ByteRanges seq;
  for (size_t k = 0; k < a.size(); ++k)
    seq.emplace_back(static_cast<uint8_t>(a[k]), static_cast<uint8_t>(b[k]));
  out.push_back(std::move(seq));
}

void split_range(uint32_t lo, uint32_t hi, std::vector<ByteRanges>& out) {
  static constexpr uint32_t kEnds[] = {0x7F, 0x7FF, 0xFFFF, kMaxCodepoint};
  for (uint32_t end : kEnds) {
    if (lo > hi) return;
    if (lo <= end) {
      const uint32_t h = std::min(hi, end);
      split_same_length(lo, h, out);
      lo = h + 1;
    }
  }
}

}  // namespace

Symbol utf8_symbol(GrammarBuilder& b, const CodepointSet& set_in) {
  CodepointSet set = set_in;
  set.remove(0xD800, 0xDFFF);
  std::vector<ByteRanges> seqs;
  for (const auto& r : set.ranges()) split_range(r.first, r.second, seqs);
  // Single bytes merge into one class; longer sequences become alternatives.
  ByteSet singles;
  std::vector<Sequence> alts;
  for (const ByteRanges& seq : seqs) {
    if (seq.size() == 1) {
      for (int c = seq[0].first; c <= seq[0].second; ++c) singles.set(static_cast<size_t>(c));
      continue;
    }
    Sequence s;
    for (const auto& [lo, hi] : seq) {
      ByteSet bs;
      for (int c = lo; c <= hi; ++c) bs.set(static_cast<size_t>(c));
      s.push_back(b.byte_class(bs));
    }
    alts.push_back(std::move(s));
  }
  if (alts.empty()) return b.byte_class(singles);  // possibly empty: an unusable symbol
  if (singles.any()) alts.insert(alts.begin(), Sequence{b.byte_class(singles)});
  return b.rule_of(std::move(alts));
}

}  // namespace iris::grammar
