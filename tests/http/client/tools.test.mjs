// Tool calling through the official openai client, on three model families: the embedded
// model's weights with tokenizers and published chat templates of Llama 3.1 (llama3_json),
// Qwen3 (hermes, with the qwen3 reasoning parser) and Mistral Nemo (mistral; its [TOOL_CALLS]
// a special token as in the real tokenizer, and a variant where it is plain text).
//  - tool_choice "required" and a named function at temperature 1, several seeds, streamed
//    and not: every finished choice is parseable calls whose arguments validate against the
//    function's schema (Debian's python3-jsonschema);
//  - tool_choice "auto": a hand-written call text in each syntax (forced with a choice
//    constraint) comes back as tool_calls, whole and as OpenAI's streamed deltas;
//  - a history with tools, assistant tool_calls and tool results renders exactly as jinja2
//    renders the template the way transformers' apply_chat_template does;
//  - bad tools / tool_choice fail with 400 naming the field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer, stopServer, client, MODEL_DIR } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const TEMPLATES = JSON.parse(fs.readFileSync(path.join(here, 'tool_templates.json'), 'utf8'));
const JINJA2_REF = path.join(here, '..', '..', 'chat_template', 'reference');

// The embedded model with another family's chat template and special tokens (its five added
// token ids renamed), so each family's syntax runs on real weights and a real tokenizer.
function makeModel(root, name, { template, rename = {}, nonSpecial = [], eos, tokens }) {
  const d = path.join(root, name);
  fs.mkdirSync(d, { recursive: true });
  fs.copyFileSync(path.join(MODEL_DIR, 'model.safetensors'), path.join(d, 'model.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'config.json'), 'utf8'));
  config.eos_token_id = eos;
  config.max_position_embeddings = 4096;  // room for the tool descriptions the templates write
  fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(config));
  const gen = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'generation_config.json'), 'utf8'));
  gen.eos_token_id = eos;
  fs.writeFileSync(path.join(d, 'generation_config.json'), JSON.stringify(gen));
  const tok = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'tokenizer.json'), 'utf8'));
  for (const t of tok.added_tokens) {
    if (rename[t.id]) t.content = rename[t.id];
    if (nonSpecial.includes(t.id)) t.special = false;
  }
  fs.writeFileSync(path.join(d, 'tokenizer.json'), JSON.stringify(tok));
  const cfg = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'tokenizer_config.json'), 'utf8'));
  for (const [id, t] of Object.entries(cfg.added_tokens_decoder)) {
    if (rename[id]) t.content = rename[id];
    if (nonSpecial.includes(Number(id))) t.special = false;
  }
  Object.assign(cfg, tokens, { chat_template: template });
  fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify(cfg));
  return d;
}

const FAMILIES = {
  llama3_1: {
    syntax: 'llama3_json',
    model: { template: TEMPLATES.llama3_1, eos: [2044, 2047],
      tokens: { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' } },
  },
  qwen3: {
    syntax: 'hermes',
    args: ['--reasoning-parser', 'qwen3'],
    model: { template: TEMPLATES.qwen3, rename: { 2045: '<|im_start|>', 2046: '<|im_end|>', 2047: '<|endoftext|>' },
      eos: [2046, 2047], tokens: { bos_token: null, eos_token: '<|im_end|>', pad_token: '<|endoftext|>' } },
  },
  mistral: {
    syntax: 'mistral',
    model: { template: TEMPLATES.mistral_nemo, rename: { 2044: '</s>', 2045: '[INST]', 2046: '[/INST]', 2047: '[TOOL_CALLS]' },
      eos: [2044], tokens: { bos_token: '<|begin_of_text|>', eos_token: '</s>' } },
  },
  // [TOOL_CALLS] as plain text: a choice constraint can then write it for the auto round trip.
  mistral_text: {
    syntax: 'mistral',
    model: { template: TEMPLATES.mistral_nemo, rename: { 2044: '</s>', 2045: '[INST]', 2046: '[/INST]', 2047: '[TOOL_CALLS]' },
      nonSpecial: [2047], eos: [2044], tokens: { bos_token: '<|begin_of_text|>', eos_token: '</s>' } },
  },
};

const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 10 },
      unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false } } },
  { type: 'function', function: { name: 'add',
    parameters: { type: 'object', properties: { a: { type: 'integer', minimum: -100, maximum: 100 },
      b: { type: 'integer', minimum: -100, maximum: 100 } }, required: ['a', 'b'], additionalProperties: false } } },
  { type: 'function', function: { name: 'now', description: 'The time', parameters: { type: 'object', properties: {} } } },
];
const schemaOf = (name) => TOOLS.find((t) => t.function.name === name).function.parameters;

let root;
const servers = {};
const clients = {};
before(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'iris-tools-'));
  for (const [name, f] of Object.entries(FAMILIES)) {
    const dir = makeModel(root, name, f.model);
    servers[name] = await startServer(['--max-queue', '1000', ...(f.args ?? [])], { model: dir });
    assert.match(servers[name].log, new RegExp(`tool-call syntax: ${f.syntax}`), `${name}: detected syntax`);
    clients[name] = client(servers[name]);
  }
});
after(async () => {
  for (const s of Object.values(servers)) await stopServer(s);
  if (root && !process.env.KEEP_TOOL_MODELS) fs.rmSync(root, { recursive: true, force: true });
});

// Validates [{schema, doc}] with python3-jsonschema; one error string ('' = valid) each.
function validate(items) {
  const script = `
import json, sys, jsonschema
out = []
for it in json.load(sys.stdin):
    try:
        jsonschema.validate(it["doc"], it["schema"])
        out.append("")
    except Exception as e:
        out.append(type(e).__name__ + ": " + str(e)[:200])
print(json.dumps(out))
`;
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', script], { input: JSON.stringify(items) }).toString());
}

function checkId(family, id) {
  if (FAMILIES[family].syntax === 'mistral') assert.match(id, /^[A-Za-z0-9]{9}$/, `mistral call id ${id}`);
  else assert.match(id, /^call_[A-Za-z0-9]{24}$/, `call id ${id}`);
}

// Rebuilds the calls of one choice from streamed chunks, checking OpenAI's delta shape.
async function collectStream(stream) {
  const calls = [];
  let content = '', reasoning = '', finish = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    for (const c of chunk.choices) {
      const d = c.delta ?? {};
      if (d.content) content += d.content;
      if (d.reasoning_content) reasoning += d.reasoning_content;
      for (const tc of d.tool_calls ?? []) {
        assert.equal(typeof tc.index, 'number');
        if (tc.index === calls.length) {
          assert.equal(typeof tc.id, 'string', 'a call starts with its id');
          assert.equal(tc.type, 'function');
          assert.equal(typeof tc.function.name, 'string');
          calls.push({ id: tc.id, name: tc.function.name, arguments: tc.function.arguments ?? '' });
        } else {
          assert.ok(tc.index < calls.length, `delta for call ${tc.index} before it started`);
          assert.equal(tc.id, undefined, 'only the first piece carries the id');
          calls[tc.index].arguments += tc.function?.arguments ?? '';
        }
      }
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { calls, content, reasoning, finish, chunks };
}

for (const family of ['llama3_1', 'qwen3', 'mistral', 'mistral_text']) {
  test(`${family}: tool_choice required and named always give calls whose arguments validate`, async () => {
    const openai = clients[family];
    const items = [];
    let finished = 0, total = 0;
    for (const seed of [1, 2, 3, 4]) {
      for (const choice of ['required', { type: 'function', function: { name: 'add' } },
        { type: 'function', function: { name: 'get_weather' } }]) {
        for (const stream of [false, true]) {
          const body = { messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: TOOLS,
            tool_choice: choice, temperature: 1, seed, max_tokens: 150, n: stream ? 1 : 2 };
          const choices = [];
          if (stream) {
            const r = await collectStream(await openai.chat.completions.create({ ...body, stream: true }));
            choices.push({ finish_reason: r.finish, message: { content: r.content || null, tool_calls: r.calls.map(
              (c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })) } });
          } else {
            const r = await openai.chat.completions.create(body);
            assert.equal(r.choices.length, 2);
            choices.push(...r.choices);
          }
          for (const c of choices) {
            total++;
            if (c.finish_reason === 'length') continue;  // cut: a prefix of a call
            assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
            finished++;
            const calls = c.message.tool_calls;
            assert.ok(Array.isArray(calls) && calls.length >= 1, JSON.stringify(c.message));
            assert.equal(c.message.content ?? '', '', 'no content beside forced calls');
            if (typeof choice === 'object') {
              assert.equal(calls.length, 1);
              assert.equal(calls[0].function.name, choice.function.name);
            }
            const ids = new Set();
            for (const call of calls) {
              checkId(family, call.id);
              ids.add(call.id);
              assert.equal(call.type, 'function');
              assert.ok(TOOLS.some((t) => t.function.name === call.function.name), call.function.name);
              assert.equal(typeof call.function.arguments, 'string');
              const doc = JSON.parse(call.function.arguments);
              items.push({ schema: schemaOf(call.function.name), doc });
            }
            assert.equal(ids.size, calls.length, 'ids are unique');
          }
        }
      }
    }
    assert.ok(finished >= total * 0.6, `${finished} of ${total} choices finished within max_tokens`);
    const errors = validate(items);
    assert.equal(errors.length, items.length);
    errors.forEach((e, i) => assert.equal(e, '', `${JSON.stringify(items[i])}: ${e}`));
  });
}

test('parallel_tool_calls false: required gives exactly one call', async () => {
  let finished = 0;
  for (const family of ['qwen3', 'mistral']) {
    for (const seed of [5, 6, 7]) {
      const r = await clients[family].chat.completions.create({ messages: [{ role: 'user', content: 'x' }],
        tools: TOOLS, tool_choice: 'required', parallel_tool_calls: false, temperature: 1, seed, max_tokens: 150 });
      const c = r.choices[0];
      if (c.finish_reason === 'length') continue;
      finished++;
      assert.equal(c.finish_reason, 'tool_calls');
      assert.equal(c.message.tool_calls.length, 1, JSON.stringify(c.message));
      JSON.parse(c.message.tool_calls[0].function.arguments);
    }
  }
  assert.ok(finished >= 4, `only ${finished} of 6 finished`);
});

// A hand-written call in each syntax, and what the parser must read out of it.
const HAND_WRITTEN = {
  llama3_1: { text: '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
    content: null, calls: [['get_weather', { city: 'Paris', unit: 'celsius' }]] },
  qwen3: { text: 'Checking both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "fahrenheit"}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": -3}}\n</tool_call>',
    content: 'Checking both.\n\n', calls: [['get_weather', { city: 'Oslo', unit: 'fahrenheit' }], ['add', { a: 2, b: -3 }]] },
  mistral_text: { text: '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "now", "arguments": {}}]',
    content: null, calls: [['add', { a: 1, b: 2 }], ['now', {}]] },
};

for (const [family, hw] of Object.entries(HAND_WRITTEN)) {
  test(`${family}: tool_choice auto reads a hand-written call, whole and streamed`, async () => {
    const openai = clients[family];
    const body = { messages: [{ role: 'user', content: 'Call something' }], tools: TOOLS, max_tokens: 200,
      structured_outputs: { choice: [hw.text] } };
    const r = await openai.chat.completions.create(body);
    const m = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.equal(m.content, hw.content);
    assert.equal(m.tool_calls.length, hw.calls.length);
    hw.calls.forEach(([name, args], i) => {
      assert.equal(m.tool_calls[i].function.name, name);
      assert.deepEqual(JSON.parse(m.tool_calls[i].function.arguments), args);
      checkId(family, m.tool_calls[i].id);
    });
    const s = await collectStream(await openai.chat.completions.create({ ...body, stream: true }));
    assert.equal(s.finish, 'tool_calls');
    assert.equal(s.content || null, hw.content);
    assert.equal(s.calls.length, hw.calls.length);
    hw.calls.forEach(([name, args], i) => {
      assert.equal(s.calls[i].name, name);
      assert.deepEqual(JSON.parse(s.calls[i].arguments), args);
      // Streamed and whole arguments are the same text.
      assert.equal(s.calls[i].arguments, m.tool_calls[i].function.arguments);
    });
    // Without tools (or with tool_choice none) the same text is plain content.
    for (const extra of [{ tools: undefined }, { tool_choice: 'none' }]) {
      const p = await openai.chat.completions.create({ ...body, ...extra });
      assert.equal(p.choices[0].message.content, hw.text);
      assert.equal(p.choices[0].message.tool_calls, undefined);
      assert.equal(p.choices[0].finish_reason, 'stop');
    }
  });
}

test('qwen3 --reasoning-parser: <think> goes to reasoning_content, whole and streamed', async () => {
  const openai = clients.qwen3;
  const text = '<think>\nThe user greets me.\n</think>\n\nHello there';
  const body = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 100, structured_outputs: { choice: [text] } };
  const r = await openai.chat.completions.create(body);
  assert.equal(r.choices[0].message.reasoning_content, '\nThe user greets me.\n');
  assert.equal(r.choices[0].message.content, 'Hello there');
  const s = await collectStream(await openai.chat.completions.create({ ...body, stream: true }));
  assert.equal(s.reasoning, '\nThe user greets me.\n');
  assert.equal(s.content, 'Hello there');
  assert.ok(s.chunks > 3);
  // Reasoning, then a call.
  const both = '<think>need weather</think>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>';
  const b = await openai.chat.completions.create({ ...body, tools: TOOLS, structured_outputs: { choice: [both] } });
  assert.equal(b.choices[0].message.reasoning_content, 'need weather');
  assert.equal(b.choices[0].message.tool_calls[0].function.name, 'now');
  assert.equal(b.choices[0].finish_reason, 'tool_calls');
});

// transformers' view of the history: arguments as objects (OpenAI sends JSON strings).
function historyFor(family) {
  const id1 = family.startsWith('mistral') ? 'aB3dE5gH9' : 'call_1';
  const id2 = family.startsWith('mistral') ? 'Zz9Yy8Xx7' : 'call_2';
  const oneCallPerTurn = family === 'llama3_1';  // its template refuses several calls in a turn
  const calls = [{ id: id1, type: 'function', function: { name: 'get_weather', arguments: '{"unit": "celsius", "city": "Paris"}' } }];
  if (!oneCallPerTurn) calls.push({ id: id2, type: 'function', function: { name: 'add', arguments: '{"b": 2, "a": 1}' } });
  const messages = [
    ...(family === 'mistral' ? [] : [{ role: 'system', content: 'You are helpful.' }]),
    { role: 'user', content: 'Weather in Paris, and 1+2?' },
    // Qwen3's template tests `'</think>' in content`, which jinja2 refuses for None.
    { role: 'assistant', content: family === 'qwen3' ? '' : null, tool_calls: calls },
    { role: 'tool', tool_call_id: id1, content: '{"temperature": 21}' },
  ];
  if (!oneCallPerTurn) messages.push({ role: 'tool', tool_call_id: id2, content: '3' });
  messages.push({ role: 'assistant', content: 'It is 21 C; 1+2=3.' }, { role: 'user', content: 'Thanks!' });
  return messages;
}

function jinja2Render(template, specialTokens, messages, tools) {
  const script = `
import json, sys
sys.path.insert(0, ${JSON.stringify(JINJA2_REF)})
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
import render_reference_jinja2 as jr
a = json.load(sys.stdin)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jr.AssistantTracker, jinja2.ext.loopcontrols])
env.filters["tojson"] = jr.tojson
env.globals["raise_exception"] = jr.raise_exception
env.globals["strftime_now"] = jr.strftime_now
for m in a["messages"]:
    for c in m.get("tool_calls") or []:
        c["function"]["arguments"] = json.loads(c["function"]["arguments"])
out = env.from_string(a["template"]).render(messages=a["messages"], tools=a["tools"], documents=None,
                                            add_generation_prompt=True, **a["special"])
sys.stdout.write(json.dumps(out))
`;
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', script],
    { input: JSON.stringify({ template, special: specialTokens, messages, tools }) }).toString());
}

for (const family of ['llama3_1', 'qwen3', 'mistral']) {
  test(`${family}: a history with tool calls and results renders as jinja2 renders it`, async () => {
    const f = FAMILIES[family];
    const messages = historyFor(family);
    const special = Object.fromEntries(Object.entries(f.model.tokens).filter(([, v]) => v !== null));
    const expected = jinja2Render(f.model.template, special, messages, TOOLS);
    assert.ok(expected.includes('get_weather') && expected.includes('Thanks!'));
    const post = async (p, body) => {
      const res = await fetch(`${servers[family].baseURL}${p}`, { method: 'POST',
        headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(res.status, 200, await res.clone().text());
      return res.json();
    };
    const { tokens } = await post('/tokenize', { messages, tools: TOOLS, add_generation_prompt: true });
    const { prompt } = await post('/detokenize', { tokens });
    assert.equal(prompt, expected);
    // The chat endpoint renders the same prompt (its usage counts the same tokens).
    const r = await clients[family].chat.completions.create({ messages, tools: TOOLS, max_tokens: 1, temperature: 0 });
    assert.equal(r.usage.prompt_tokens, tokens.length);
  });
}

test('bad tools and tool_choice fail with 400 naming the field, before any engine work', async () => {
  const openai = clients.qwen3;
  const base = { messages: [{ role: 'user', content: 'x' }], max_tokens: 5 };
  const cases = [
    [{ tools: { type: 'function' } }, /^tools: must be a list/],
    [{ tools: ['get_weather'] }, /^tools\[0\]: must be an object/],
    [{ tools: [{ type: 'retrieval' }] }, /^tools\[0\]\.type: /],
    [{ tools: [{ type: 'function' }] }, /^tools\[0\]\.function: required/],
    [{ tools: [{ type: 'function', function: { description: 'no name' } }] }, /^tools\[0\]\.function\.name: required/],
    [{ tools: [{ type: 'function', function: { name: 'bad name!' } }] }, /^tools\[0\]\.function\.name: /],
    [{ tools: [TOOLS[0], TOOLS[0]] }, /^tools\[1\]\.function\.name: 'get_weather' is listed twice/],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: 'object' } }] }, /^tools\[0\]\.function\.parameters: must be/],
    [{ tools: TOOLS, tool_choice: 'sometimes' }, /^tool_choice: 'sometimes'/],
    [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'missing' } } }, /^tool_choice\.function\.name: no tool named 'missing'/],
    [{ tool_choice: 'required' }, /^tool_choice: 'required' needs a non-empty tools list/],
    [{ tools: TOOLS, tool_choice: 'required', response_format: { type: 'json_object' } }, /^tool_choice: .* cannot be combined with response_format/],
    [{ tools: [TOOLS[1], { type: 'function', function: { name: 'g', parameters: { type: 'object', properties: { x: { type: 'integer', multipleOf: 3 } } } } }],
      tool_choice: 'required' }, /^tools\[1\]\.function\.parameters: .*multipleOf/],
    [{ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: null,
      tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'add', arguments: '{"a": 1,' } }] }] },
    /^messages\[1\]\.tool_calls\[0\]\.function\.arguments: not valid JSON/],
  ];
  for (const [extra, re] of cases) {
    await assert.rejects(openai.chat.completions.create({ ...base, ...extra }), (e) => {
      assert.equal(e.status, 400, `${JSON.stringify(extra)}: ${e.message}`);
      assert.match(e.error?.message ?? '', re, JSON.stringify(extra));
      return true;
    });
  }
});
