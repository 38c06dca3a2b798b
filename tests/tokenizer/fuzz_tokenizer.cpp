// Fixed-seed fuzz run over encode / decode / streaming decode: random bytes, invalid UTF-8,
// long runs of one character, spellings of added tokens, random (also out-of-range) ids.
// Checks that nothing throws or crashes, that decode(encode(x)) == x for byte-level
// tokenizers on valid UTF-8, and that streamed text equals the full decode. Meant to run
// under ASan/UBSan (label `sanitize`).
//
//   tokenizer_fuzz [iterations] [tokenizer_dir ...]   (built-in tiny tokenizers are always run)
//
// Built with -DIRIS_LIBFUZZER and -fsanitize=fuzzer it instead exposes LLVMFuzzerTestOneInput.
#include <iostream>
#include <random>

#include "engine/core/check.h"
#include "engine/tokenizer/tokenizer.h"
#include "tests/tokenizer/tiny_tokenizers.h"

namespace {

// Strict UTF-8 check (no surrogates, nothing above U+10FFFF, no overlong forms).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c < 0xE0) ? 2 : (c >= 0xE0 && c < 0xF0) ? 3 : (c >= 0xF0 && c < 0xF5) ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    auto c1 = static_cast<unsigned char>(s[i + 1 < s.size() ? i + 1 : i]);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) || (c == 0xF0 && c1 < 0x90) ||
        (c == 0xF4 && c1 > 0x8F)) {
      return false;
    }
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> atoms = {
      "a", "Z", " ", "  ", "\n", "\r\n", "\t", "'s", "123", "é", "e\xCC\x81", "你", "한", "ب",
      "\xF0\x9F\x98\x80", "\xE2\x80\x8D", "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "<s>", "</s>",
      "<|begin_of_text|>", "<|end_of_text|>", "<tool>", "\xE2\x96\x81", "<0x41>", "\xC4\xA0",
      "\xFF", "\xC3", "\xE4\xBD", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", std::string(1, '\0')};
  std::uniform_int_distribution<int> kind(0, 9);
  std::string s;
  switch (kind(rng)) {
    case 0: {  // raw random bytes
      std::uniform_int_distribution<int> len(0, 64), byte(0, 255);
      for (int n = len(rng); n > 0; --n) s.push_back(static_cast<char>(byte(rng)));
      break;
    }
    case 1: {  // a long run of one atom
      std::uniform_int_distribution<size_t> pick(0, atoms.size() - 1);
      std::uniform_int_distribution<int> len(100, 3000);
      const std::string& a = atoms[pick(rng)];
      for (int n = len(rng); n > 0; --n) s += a;
      break;
    }
    default: {  // a mix of atoms
      std::uniform_int_distribution<size_t> pick(0, atoms.size() - 1);
      std::uniform_int_distribution<int> len(0, 40);
      for (int n = len(rng); n > 0; --n) s += atoms[pick(rng)];
    }
  }
  return s;
}

// One round on one input; returns false on a broken invariant.
bool exercise(const iris::Tokenizer& tok, bool byte_level, const std::string& text,
              std::mt19937& rng, std::string* why) {
  std::uniform_int_distribution<int> coin(0, 1);
  bool add_special = coin(rng), parse_special = coin(rng), skip = coin(rng);
  auto ids = tok.encode(text, add_special, parse_special);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) {
      *why = "encode produced id " + std::to_string(id) + " outside the vocab";
      return false;
    }
  }
  std::string dec = tok.decode(ids, false);
  if (!valid_utf8(dec)) {
    *why = "decode produced invalid UTF-8";
    return false;
  }
  if (byte_level && !add_special && valid_utf8(text) && dec != text) {
    *why = "byte-level round trip changed the text: " + hex(text) + " -> " + hex(dec);
    return false;
  }
  iris::IncrementalDetokenizer d(tok, {}, {}, skip);
  std::string streamed;
  for (int32_t id : ids) streamed += d.push(id).text;
  streamed += d.flush();
  if (streamed != tok.decode(ids, skip)) {
    *why = "streamed text differs from decode";
    return false;
  }
  // Random ids, some out of range, with stop strings: must not throw or emit bad UTF-8.
  std::uniform_int_distribution<int32_t> any_id(-5, tok.vocab_size() + 5);
  std::vector<int32_t> random_ids(static_cast<size_t>(std::uniform_int_distribution<int>(0, 30)(rng)));
  for (auto& id : random_ids) id = any_id(rng);
  std::string rdec = tok.decode(random_ids, skip);
  iris::IncrementalDetokenizer stop(tok, ids, {"a", "\n\n", "</s>"}, skip);
  std::string out;
  for (int32_t id : random_ids) out += stop.push(id).text;
  out += stop.flush();
  if (!valid_utf8(rdec) || !valid_utf8(out)) {
    std::string ids_text;
    for (int32_t id : random_ids) ids_text += std::to_string(id) + " ";
    *why = "decode of random ids produced invalid UTF-8: ids " + ids_text + " decode " + hex(rdec) +
           " streamed " + hex(out);
    return false;
  }
  return true;
}

struct Target {
  std::string name;
  std::unique_ptr<iris::Tokenizer> tok;
  bool byte_level;
};

std::vector<Target> builtin_targets() {
  std::vector<Target> t;
  t.push_back({"tiny_sentencepiece", iris::Tokenizer::from_json(iris::test::tiny_sentencepiece_json()), false});
  t.push_back({"tiny_bytelevel", iris::Tokenizer::from_json(iris::test::tiny_bytelevel_json()), true});
  return t;
}

}  // namespace

#ifdef IRIS_LIBFUZZER
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::vector<Target> targets = builtin_targets();
  std::mt19937 rng(static_cast<uint32_t>(size));
  std::string text(reinterpret_cast<const char*>(data), size);
  for (auto& t : targets) {
    std::string why;
    if (!exercise(*t.tok, t.byte_level, text, rng, &why)) {
      std::cerr << t.name << ": " << why << "\n";
      __builtin_trap();
    }
  }
  return 0;
}
#else
int main(int argc, char** argv) {
  int iterations = argc > 1 ? std::atoi(argv[1]) : 2000;
  std::vector<Target> targets = builtin_targets();
  for (int i = 2; i < argc; ++i) {
    // Real vocabularies: only ByteLevel ones without a normalizer round-trip exactly; be safe.
    targets.push_back({argv[i], iris::Tokenizer::from_dir(argv[i]), false});
  }
  size_t passed = 0, failed = 0;
  for (auto& t : targets) {
    std::mt19937 rng(1234);
    size_t bad = 0;
    for (int it = 0; it < iterations; ++it) {
      std::string text = random_text(rng);
      std::string why;
      bool ok = false;
      try {
        ok = exercise(*t.tok, t.byte_level, text, rng, &why);
      } catch (const std::exception& e) {
        why = std::string("exception: ") + e.what();
      }
      if (!ok && bad++ < 5) std::cout << "FAIL " << t.name << " iteration " << it << ": " << why << "\n";
    }
    std::cout << t.name << ": " << iterations << " iterations, " << bad << " failures\n";
    (bad == 0 ? passed : failed)++;
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
#endif
