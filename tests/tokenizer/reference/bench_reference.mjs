// Encode throughput of HF's JS tokenizer (@huggingface/tokenizers) on the same documents as
// tests/tokenizer/bench_tokenizer.cpp: the corpus repeated to about `mb` MB.
//
//   node bench_reference.mjs <tokenizer_dir> <corpus.jsonl> [mb=4]
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [dir, corpusPath, mbArg] = process.argv.slice(2);
const mb = Number(mbArg ?? 4);
const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
                          JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")));
const corpus = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l).map((l) => JSON.parse(l).text);
const docs = [];
let total = 0;
for (let k = 0; total < mb * 1e6; ++k) {
  const d = corpus[k % corpus.length];
  docs.push(d);
  total += Buffer.byteLength(d, "utf8");
}
for (let k = 0; k < corpus.length; ++k) tok.encode(docs[k]);  // warm-up
let tokens = 0;
const t0 = process.hrtime.bigint();
for (const d of docs) tokens += tok.encode(d).ids.length;
const s = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`@huggingface/tokenizers encode: ${(total / 1e6).toFixed(2)} MB in ${docs.length} documents, ${tokens} tokens, ${s.toFixed(3)} s, ${(total / 1e6 / s).toFixed(2)} MB/s`);
