// Encode throughput benchmark (a program, not a test): encodes the documents of
// tests/tokenizer/corpus.jsonl, repeated to about `mb` MB, one encode() call per document, and
// prints MB/s. reference/bench_reference.mjs measures HF's JS tokenizer on the same documents.
//
//   tokenizer_bench <tokenizer_dir> <corpus.jsonl> [mb=4]
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>

#include "engine/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <tokenizer_dir> <corpus.jsonl> [mb]\n", argv[0]);
    return 2;
  }
  double mb = argc > 3 ? std::atof(argv[3]) : 4.0;
  auto tok = iris::Tokenizer::from_dir(argv[1]);
  std::vector<std::string> corpus;
  std::ifstream in(argv[2]);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) corpus.push_back(nlohmann::json::parse(line)["text"]);
  }
  std::vector<std::string> docs;
  size_t total = 0;
  for (size_t k = 0; total < mb * 1e6; ++k) {
    docs.push_back(corpus[k % corpus.size()]);
    total += docs.back().size();
  }
  for (size_t k = 0; k < corpus.size(); ++k) tok->encode(docs[k]);  // warm-up
  size_t tokens = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& d : docs) tokens += tok->encode(d).size();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("iris encode: %.2f MB in %zu documents, %zu tokens, %.3f s, %.2f MB/s\n", total / 1e6,
              docs.size(), tokens, s, total / 1e6 / s);
  return 0;
}
