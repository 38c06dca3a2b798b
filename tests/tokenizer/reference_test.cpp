// Compares iris::Tokenizer with Hugging Face's reference outputs (written by
// reference/make_reference.mjs) for every string of the corpus: encode with and without
// special tokens, decode with and without skip_special_tokens, and the streaming
// detokenizer's concatenated output against the full decode.
//
//   tokenizer_reference_test <corpus.jsonl> <reference_dir> [name|all] [known_divergences.json]
//
// Strings listed in known_divergences.json (where the JS reference is known to differ from
// HF's Rust library) are counted as skipped and printed, not compared.
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "engine/core/check.h"
#include "engine/tokenizer/tokenizer.h"

namespace {

using nlohmann::json;

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  IRIS_CHECK(in.good()) << "cannot open " << path;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

std::string show_ids(const std::vector<int32_t>& ids) {
  std::ostringstream os;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) os << (i ? " " : "") << ids[i];
  if (ids.size() > 40) os << " ... (" << ids.size() << " ids)";
  return os.str();
}

std::string excerpt(const std::string& s) {
  return json(s.size() > 120 ? s.substr(0, 120) + "..." : s).dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string stream_decode(const iris::Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  iris::IncrementalDetokenizer detok(tok, {}, {}, skip);
  std::string out;
  for (int32_t id : ids) out += detok.push(id).text;
  out += detok.flush();
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " <corpus.jsonl> <reference_dir> [name|all] [divergences]\n";
    return 2;
  }
  std::string ref_dir = argv[2];
  std::string only = argc > 3 && std::string(argv[3]) != "all" ? argv[3] : "";
  std::set<std::pair<std::string, std::string>> divergent;  // (tokenizer, text)
  if (argc > 4) {
    std::ifstream in(argv[4]);
    IRIS_CHECK(in.good()) << "cannot open " << argv[4];
    const json known = json::parse(in);
    for (const auto& e : known["entries"]) {
      divergent.emplace(e["tokenizer"].get<std::string>(), e["text"].get<std::string>());
    }
  }
  std::ifstream manifest_in(ref_dir + "/manifest.json");
  if (!manifest_in.good()) {
    std::cerr << "error: " << ref_dir << "/manifest.json is missing: the reference fixture did not "
              << "run. Run: npm ci --prefix tests/tokenizer/reference\n";
    return 2;
  }
  json manifest = json::parse(manifest_in);
  std::vector<std::string> corpus;
  for (const auto& line : read_lines(argv[1])) corpus.push_back(json::parse(line)["text"]);

  size_t passed = 0, failed = 0, skipped = 0, tokenizers = 0;
  for (const auto& entry : manifest) {
    std::string name = entry["name"];
    if (!only.empty() && name != only) continue;
    ++tokenizers;
    auto tok = iris::Tokenizer::from_dir(entry["dir"]);
    auto ref = read_lines(ref_dir + "/" + name + ".jsonl");
    IRIS_CHECK(ref.size() == corpus.size()) << name << ": reference has " << ref.size()
                                            << " lines, corpus " << corpus.size();
    size_t shown = 0;
    for (size_t i = 0; i < corpus.size(); ++i) {
      if (divergent.count({name, corpus[i]})) {
        ++skipped;
        std::cout << "SKIP " << name << " #" << i << " " << excerpt(corpus[i])
                  << " (known divergence of the JS reference)\n";
        continue;
      }
      json r = json::parse(ref[i]);
      auto ids_ref = r["ids"].get<std::vector<int32_t>>();
      auto plain_ref = r["ids_plain"].get<std::vector<int32_t>>();
      std::vector<std::string> problems;
      auto ids = tok->encode(corpus[i], true);
      if (ids != ids_ref) problems.push_back("encode: got " + show_ids(ids) + "\n      want " + show_ids(ids_ref));
      auto plain = tok->encode(corpus[i], false);
      if (plain != plain_ref) problems.push_back("encode(add_special_tokens=false): got " + show_ids(plain) + "\n      want " + show_ids(plain_ref));
      std::string dec = tok->decode(ids_ref, false);
      if (dec != r["decode"].get<std::string>()) problems.push_back("decode: got " + excerpt(dec) + " want " + excerpt(r["decode"]));
      std::string dec_skip = tok->decode(ids_ref, true);
      if (dec_skip != r["decode_skip"].get<std::string>()) problems.push_back("decode(skip_special_tokens): got " + excerpt(dec_skip) + " want " + excerpt(r["decode_skip"]));
      std::string streamed = stream_decode(*tok, ids_ref, false);
      if (streamed != dec) problems.push_back("streaming: got " + excerpt(streamed) + " want " + excerpt(dec));
      std::string streamed_skip = stream_decode(*tok, ids_ref, true);
      if (streamed_skip != dec_skip) problems.push_back("streaming(skip): got " + excerpt(streamed_skip) + " want " + excerpt(dec_skip));
      if (problems.empty()) {
        ++passed;
        continue;
      }
      ++failed;
      if (shown++ < 8) {
        std::cout << "FAIL " << name << " #" << i << " " << excerpt(corpus[i]) << "\n";
        for (const auto& p : problems) std::cout << "    " << p << "\n";
      }
    }
    std::cout << name << ": " << corpus.size() << " strings compared\n";
  }
  if (tokenizers == 0) {
    std::cerr << "error: no tokenizer named '" << only << "' in the manifest\n";
    return 2;
  }
  std::cout << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  return failed == 0 ? 0 : 1;
}
