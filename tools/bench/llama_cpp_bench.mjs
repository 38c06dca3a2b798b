// Times llama.cpp (the prebuilt CPU library node-llama-cpp ships) on a GGUF file the way
// bench_generate times Iris: prefill of PROMPT token ids in one batch, then greedy decode of
// DECODE tokens one at a time; the same prompt ids (3 + i·7919 mod (vocab − 3)).
//
// usage: node llama_cpp_bench.mjs MODEL.gguf [prompt_tokens=128] [decode_tokens=64] [threads=2]
// Run from a folder where `npm install node-llama-cpp` was done (NODE_PATH is not used by ES
// modules): tools/bench/llama_cpp_side_by_side.sh copies this file there.
// Prints one line: RESULT {"prefill_tokens_per_s": ..., "decode_ms_per_token": ...}
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, promptArg = "128", decodeArg = "64", threadsArg = "2"] = process.argv.slice(2);
if (!modelPath) {
  console.error("usage: node llama_cpp_bench.mjs MODEL.gguf [prompt_tokens] [decode_tokens] [threads]");
  process.exit(2);
}
const promptLen = Number(promptArg), decodeLen = Number(decodeArg), threads = Number(threadsArg);
if (!(promptLen > 0 && decodeLen > 0 && threads > 0)) {
  console.error("prompt_tokens, decode_tokens and threads must be positive");
  process.exit(2);
}

const llama = await getLlama({gpu: false, build: "never", maxThreads: threads,
                              logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const context = await model.createContext({
  contextSize: 1024, batchSize: Math.max(512, promptLen), sequences: 1,
  threads, flashAttention: false});
const sequence = context.getSequence();
const vocab = Number(model.fileInfo.metadata?.llama?.vocab_size ?? 0);
if (!(vocab > 3)) {
  console.error(`${modelPath}: no llama.vocab_size in the GGUF metadata`);
  process.exit(2);
}
const prompt = Array.from({length: promptLen}, (_, i) => 3 + (i * 7919) % (Number(vocab) - 3));

async function run(decodeTokens) {
  await sequence.clearHistory();
  const t0 = performance.now();
  await sequence.evaluateWithoutGeneratingNewTokens(prompt);
  const t1 = performance.now();
  let n = 0;
  // Each iteration evaluates one token (the previous output) and samples the next greedily.
  for await (const token of sequence.evaluate([prompt[promptLen - 1]], {temperature: 0})) {
    if (++n >= decodeTokens) break;
  }
  const t2 = performance.now();
  return {prefill_s: (t1 - t0) / 1e3, decode_s: (t2 - t1) / 1e3, n};
}

await run(4);  // warm-up
const r = await run(decodeLen);
console.log(`llama.cpp ${modelPath}: prefill ${promptLen} tokens in ${(r.prefill_s * 1e3).toFixed(1)} ms = ` +
            `${(promptLen / r.prefill_s).toFixed(0)} tokens/s; decode ${(r.decode_s * 1e3 / r.n).toFixed(3)} ms/token ` +
            `(${r.n} tokens, ${threads} threads)`);
console.log(`RESULT ${JSON.stringify({engine: "llama.cpp", model: modelPath, threads,
                                      prompt_tokens: promptLen, decode_tokens: r.n,
                                      prefill_tokens_per_s: promptLen / r.prefill_s,
                                      decode_ms_per_token: r.decode_s * 1e3 / r.n})}`);
await context.dispose();
await model.dispose();
