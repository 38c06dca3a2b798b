// Structured output through the OpenAI API: response_format json_schema / json_object and
// vLLM's structured_outputs (regex, choice, grammar) on the embedded model sampling at
// temperature 1 — noise unless constrained. Every output that finished with "stop" must
// validate with an independent validator (Debian's python3-jsonschema, Python's re); bad
// constraints fail with 400 naming the field, before any engine work.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import { startServer, stopServer, client } from './harness.mjs';

let server;
let openai;
before(async () => {
  server = await startServer(['--max-queue', '1000']);
  openai = client(server);
});
after(async () => { await stopServer(server); });

// Validates [{schema, text}] with python3-jsonschema; returns one error string ('' = valid) each.
function validate(items) {
  const script = `
import json, sys, jsonschema
items = json.load(sys.stdin)
out = []
for it in items:
    try:
        doc = json.loads(it["text"])
        jsonschema.validate(doc, it["schema"], format_checker=jsonschema.FormatChecker())
        out.append("")
    except Exception as e:
        out.append(type(e).__name__ + ": " + str(e)[:200])
print(json.dumps(out))
`;
  return JSON.parse(execFileSync('/usr/bin/python3', ['-c', script], { input: JSON.stringify(items) }).toString());
}

const schemas = [
  { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 150 } },
    required: ['name', 'age'], additionalProperties: false },
  { type: 'object', properties: { tags: { type: 'array', items: { type: 'string', enum: ['a', 'b', 'c'] }, minItems: 1, maxItems: 3 },
    ok: { type: 'boolean' } }, required: ['tags', 'ok'], additionalProperties: false },
  { type: 'object', properties: { id: { type: 'string', format: 'uuid' }, when: { type: 'string', format: 'date' } },
    required: ['id', 'when'], additionalProperties: false },
  { anyOf: [{ type: 'integer', minimum: 1, maximum: 9 }, { type: 'string', enum: ['none'] }] },
];

test('response_format json_schema: every finished output validates (temperature 1, several seeds)', async () => {
  const items = [];
  let stopped = 0;
  for (const [k, schema] of schemas.entries()) {
    for (const seed of [1, 2, 3]) {
      const api = k % 2 === 0 ? 'chat' : 'completions';
      const common = { max_tokens: 120, temperature: 1, seed,
        response_format: { type: 'json_schema', json_schema: { name: `s${k}`, schema, strict: true } } };
      const r = api === 'chat'
        ? await openai.chat.completions.create({ messages: [{ role: 'user', content: 'Give me JSON' }], ...common })
        : await openai.completions.create({ prompt: 'JSON:', ...common });
      const c = r.choices[0];
      const text = api === 'chat' ? c.message.content : c.text;
      if (c.finish_reason === 'stop') {
        stopped++;
        items.push({ schema, text });
      } else {
        assert.equal(c.finish_reason, 'length');
      }
    }
  }
  assert.ok(stopped >= schemas.length, `only ${stopped} outputs finished within max_tokens`);
  const errors = validate(items);
  errors.forEach((e, i) => assert.equal(e, '', `${JSON.stringify(items[i])}: ${e}`));
});

test('json_object, regex, choice and grammar constraints hold', async () => {
  for (const seed of [4, 5]) {
    const j = await openai.chat.completions.create({ messages: [{ role: 'user', content: 'x' }], max_tokens: 80,
      temperature: 1, seed, response_format: { type: 'json_object' } });
    if (j.choices[0].finish_reason === 'stop') {
      const v = JSON.parse(j.choices[0].message.content);
      assert.equal(typeof v, 'object');
      assert.ok(v !== null && !Array.isArray(v));
    }
    const re = await openai.completions.create({ prompt: 'Code:', max_tokens: 20, temperature: 1, seed,
      structured_outputs: { regex: '[a-z]{3}-[0-9]{2,4}' } });
    assert.equal(re.choices[0].finish_reason, 'stop');
    assert.match(re.choices[0].text, /^[a-z]{3}-[0-9]{2,4}$/);
    const ch = await openai.chat.completions.create({ messages: [{ role: 'user', content: 'Pick' }], max_tokens: 10,
      temperature: 1, seed, structured_outputs: { choice: ['red', 'green', 'blue sky'] } });
    assert.ok(['red', 'green', 'blue sky'].includes(ch.choices[0].message.content), ch.choices[0].message.content);
    const g = await openai.completions.create({ prompt: 'Say', max_tokens: 20, temperature: 1, seed,
      structured_outputs: { grammar: 'root ::= "yes" | "no" | ("maybe " [0-9])' } });
    assert.match(g.choices[0].text, /^(yes|no|maybe [0-9])$/);
  }
  // Streamed: the deltas concatenate to a valid output too.
  const s = await openai.completions.create({ prompt: 'Code:', max_tokens: 20, temperature: 1, seed: 9, stream: true,
    structured_outputs: { regex: '[0-9]{5}' } });
  let text = '';
  for await (const c of s) text += c.choices[0]?.text ?? '';
  assert.match(text, /^[0-9]{5}$/);
});

test('bad constraints fail with 400 naming the field', async () => {
  const cases = [
    [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', uniqueItems: true } } } },
      'response_format.json_schema.schema'],
    [{ response_format: { type: 'yaml' } }, 'response_format.type'],
    [{ structured_outputs: { regex: '(a' } }, 'structured_outputs.regex'],
    [{ structured_outputs: { choice: [] } }, 'structured_outputs.choice'],
    [{ structured_outputs: { grammar: 'root ::= (' } }, 'structured_outputs.grammar'],
    [{ structured_outputs: { regex: 'a', choice: ['b'] } }, 'only one output constraint'],
  ];
  for (const [extra, field] of cases) {
    await assert.rejects(openai.completions.create({ prompt: 'x', max_tokens: 4, ...extra }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${JSON.stringify(extra)}: ${e.message}`);
      assert.ok(e.message.includes(field), `${e.message} should name ${field}`);
      return true;
    });
  }
});

test('a constraint over --max-constraint-compile-ms is refused with 400 naming the field', async () => {
  const capped = await startServer(['--max-constraint-compile-ms', '1']);
  try {
    const c = client(capped);
    // 50,000 unrolled optional repetitions (one rule each) take far longer than 1 ms to build.
    await assert.rejects(c.completions.create({ prompt: 'x', max_tokens: 2,
      structured_outputs: { regex: '([a-z][0-9]){0,50000}' } }), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.message, /structured_outputs\.regex: the constraint took longer than 1 ms to compile/);
      return true;
    });
    const ok = await c.completions.create({ prompt: 'x', max_tokens: 8, temperature: 1,
      structured_outputs: { choice: ['yes', 'no'] } });
    assert.ok(['yes', 'no'].includes(ok.choices[0].text), ok.choices[0].text);
  } finally {
    await stopServer(capped);
  }
});
