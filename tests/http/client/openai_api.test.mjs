// The OpenAI-compatible HTTP API of `iris serve`, driven through the official `openai` npm
// client (and raw HTTP where framing matters), compared with the gRPC API on the same server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  startServer, stopServer, client, grpcCall, waitIdle, assertFiniteLogprobs, parseSSE, IRIS, MODEL_DIR,
} from './harness.mjs';

const execFileP = promisify(execFile);
// `iris generate --json` (no server): the engine with the sampling fields its CLI maps.
async function cliGenerate(args) {
  const { stdout } = await execFileP(IRIS, ['generate', '--model', MODEL_DIR, '--json', ...args]);
  return JSON.parse(stdout);
}

let server;
let openai;

before(async () => {
  server = await startServer(['--max-queue', '4096']);
  openai = client(server);
});

after(async () => {
  const res = await stopServer(server);
  assert.equal(res?.code, 0,
    `iris serve should drain and exit 0: ${JSON.stringify(res)}; its log ends:\n${server.log.slice(-6000)}`);
});

async function collectChatStream(params) {
  const stream = await openai.chat.completions.create({ ...params, stream: true });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

test('models list names the served model', async () => {
  const list = await openai.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert.deepEqual(ids, ['iris-tiny']);
  const one = await openai.models.retrieve('iris-tiny');
  assert.equal(one.id, 'iris-tiny');
  assert.equal(one.max_model_len, 512);
});

test('chat: streamed deltas concatenate to the non-streamed text; role first, finish last', async () => {
  const params = { model: 'iris-tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 24, temperature: 0 };
  const full = await openai.chat.completions.create(params);
  assert.equal(full.object, 'chat.completion');
  assert.equal(full.choices.length, 1);
  assert.equal(full.choices[0].message.role, 'assistant');
  assert.ok(full.choices[0].message.content.length > 0);
  const chunks = await collectChatStream(params);
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, full.choices[0].message.content);
  const last = chunks[chunks.length - 1];
  assert.equal(last.choices[0].finish_reason, full.choices[0].finish_reason);
  for (const c of chunks.slice(0, -1)) assert.equal(c.choices[0].finish_reason, null);
  for (const c of chunks) assert.equal(c.id, chunks[0].id);
  // Usage: the prompt as the tokenizer counts it (vLLM's /tokenize with messages).
  const tok = await (await fetch(`${server.baseURL}/tokenize`, { method: 'POST',
    body: JSON.stringify({ messages: params.messages }) })).json();
  assert.equal(full.usage.prompt_tokens, tok.count);
  assert.equal(full.usage.total_tokens, full.usage.prompt_tokens + full.usage.completion_tokens);
});

test('chat greedy equals gRPC Chat token for token, with logprobs and top_logprobs', async () => {
  const resp = await openai.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }],
    max_tokens: 20, temperature: 0, logprobs: true, top_logprobs: 3, ignore_eos: true });
  const ref = (await grpcCall(server, 'chat', ['--temperature', '0', '--max-tokens', '20', '--logprobs', '3',
    '--ignore-eos', 'Hello'])).get(0);
  const c = resp.choices[0];
  assert.equal(c.message.content, ref.text);
  assert.equal(c.finish_reason, 'length');
  assert.equal(c.logprobs.content.length, ref.ids.length);
  assert.equal(resp.usage.completion_tokens, ref.ids.length);
  assert.equal(resp.usage.prompt_tokens, ref.usage.promptTokens);
  const lps = c.logprobs.content.map((e) => e.logprob);
  assertFiniteLogprobs(assert, lps, 'chat');
  for (let i = 0; i < lps.length; ++i) {
    assert.ok(Math.abs(lps[i] - ref.logprobs[i]) < 1e-5, `logprob ${i}: ${lps[i]} vs ${ref.logprobs[i]}`);
    const top = c.logprobs.content[i].top_logprobs;
    assert.equal(top.length, 3);
    assert.equal(top.length, ref.top[i].tokenIds.length);
    for (let k = 0; k < 3; ++k) assert.ok(Math.abs(top[k].logprob - ref.top[i].logprobs[k]) < 1e-5);
    // bytes spell the token
    assert.equal(Buffer.from(c.logprobs.content[i].bytes).toString('utf8'), c.logprobs.content[i].token);
  }
});

test('completions greedy equals gRPC Generate; streamed equals non-streamed', async () => {
  const params = { model: 'iris-tiny', prompt: 'Once upon a time', max_tokens: 16, temperature: 0, logprobs: 2 };
  const full = await openai.completions.create(params);
  const ref = (await grpcCall(server, 'generate', ['--temperature', '0', '--max-tokens', '16', '--logprobs', '2',
    'Once upon a time'])).get(0);
  assert.equal(full.choices[0].text, ref.text);
  assert.equal(full.choices[0].finish_reason, ref.finishReason);
  assert.equal(full.usage.completion_tokens, ref.ids.length);
  assert.equal(full.usage.prompt_tokens, ref.usage.promptTokens);
  const lp = full.choices[0].logprobs;
  assert.equal(lp.token_logprobs.length, ref.ids.length);
  assertFiniteLogprobs(assert, lp.token_logprobs, 'completions');
  for (let i = 0; i < ref.logprobs.length; ++i) assert.ok(Math.abs(lp.token_logprobs[i] - ref.logprobs[i]) < 1e-5);
  assert.equal(lp.top_logprobs.length, ref.ids.length);
  for (const t of lp.top_logprobs) assert.equal(Object.keys(t).length <= 2, true);
  const stream = await openai.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const c of stream) {
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.equal(text, full.choices[0].text);
  assert.equal(finish, full.choices[0].finish_reason);
  assert.deepEqual(usage, full.usage);
});

test('completions: a list of prompts (strings and token ids), each with its own n choices', async () => {
  const tok = await (await fetch(`${server.baseURL}/tokenize`, { method: 'POST',
    body: JSON.stringify({ prompt: 'Hello there' }) })).json();
  const resp = await openai.completions.create({ prompt: ['Hello', 'The sky'], max_tokens: 5, temperature: 0, n: 2 });
  assert.equal(resp.choices.length, 4);
  assert.deepEqual(resp.choices.map((c) => c.index), [0, 1, 2, 3]);
  const solo0 = await openai.completions.create({ prompt: 'Hello', max_tokens: 5, temperature: 0 });
  const solo1 = await openai.completions.create({ prompt: 'The sky', max_tokens: 5, temperature: 0 });
  assert.equal(resp.choices[0].text, solo0.choices[0].text);
  assert.equal(resp.choices[1].text, solo0.choices[0].text);
  assert.equal(resp.choices[2].text, solo1.choices[0].text);
  assert.equal(resp.usage.prompt_tokens, solo0.usage.prompt_tokens + solo1.usage.prompt_tokens);
  assert.equal(resp.usage.completion_tokens, 20);
  const ids = await openai.completions.create({ prompt: [tok.tokens, tok.tokens], max_tokens: 4, temperature: 0 });
  const txt = await openai.completions.create({ prompt: 'Hello there', max_tokens: 4, temperature: 0 });
  assert.equal(ids.choices.length, 2);
  assert.equal(ids.choices[1].text, txt.choices[0].text);
  const echo = await openai.completions.create({ prompt: 'Hello there', max_tokens: 4, temperature: 0, echo: true });
  assert.equal(echo.choices[0].text, 'Hello there' + txt.choices[0].text);
});

test('n = 3 with a seed reproduces, and the choices differ', async () => {
  const params = { messages: [{ role: 'user', content: 'Tell me something' }], max_tokens: 16, temperature: 1,
    n: 3, seed: 1234 };
  const a = await openai.chat.completions.create(params);
  const b = await openai.chat.completions.create(params);
  assert.equal(a.choices.length, 3);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  assert.ok(new Set(a.choices.map((c) => c.message.content)).size >= 2, 'seeded choices should differ');
  const ref = await grpcCall(server, 'chat', ['--temperature', '1', '--max-tokens', '16', '--n', '3', '--seed', '1234',
    'Tell me something']);
  for (let i = 0; i < 3; ++i) assert.equal(a.choices[i].message.content, ref.get(i).text);
  // Streamed with n = 3: every choice gets its role chunk and its finish.
  const chunks = await collectChatStream(params);
  const texts = ['', '', ''];
  const finishes = [0, 0, 0];
  for (const c of chunks)
    for (const ch of c.choices) {
      texts[ch.index] += ch.delta.content ?? '';
      if (ch.finish_reason) finishes[ch.index]++;
    }
  assert.deepEqual(texts, a.choices.map((c) => c.message.content));
  assert.deepEqual(finishes, [1, 1, 1]);
});

test('stop strings cut as gRPC cuts them', async () => {
  const full = await openai.completions.create({ prompt: 'Hello', max_tokens: 20, temperature: 0, ignore_eos: true });
  const words = full.choices[0].text.trim().split(' ');
  const stop = words[Math.min(3, words.length - 1)];
  const cut = await openai.completions.create({ prompt: 'Hello', max_tokens: 20, temperature: 0, ignore_eos: true,
    stop: [stop] });
  // (the prompt first: --stop takes every value after it)
  const ref = (await grpcCall(server, 'generate', ['Hello', '--temperature', '0', '--max-tokens', '20',
    '--ignore-eos', '--stop', stop])).get(0);
  assert.equal(cut.choices[0].text, ref.text);
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.ok(!cut.choices[0].text.includes(stop));
  assert.equal(cut.usage.completion_tokens, ref.ids.length);
  const chat = await openai.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }], stop: 'you',
    max_tokens: 20, temperature: 0 });
  const chatRef = (await grpcCall(server, 'chat', ['Hello', '--temperature', '0', '--max-tokens', '20',
    '--stop', 'you'])).get(0);
  assert.equal(chat.choices[0].message.content, chatRef.text);
});

test('sampling fields reach the engine (seeded output equals gRPC with the same fields)', async () => {
  const resp = await openai.completions.create({ prompt: 'Hello', max_tokens: 12, temperature: 0.8, top_p: 0.9,
    top_k: 20, min_p: 0.05, seed: 99, presence_penalty: 0.5, frequency_penalty: 0.3, repetition_penalty: 1.2 });
  const ref = (await grpcCall(server, 'generate', ['--temperature', '0.8', '--top-p', '0.9', '--top-k', '20',
    '--min-p', '0.05', '--seed', '99', '--repetition-penalty', '1.2', '--max-tokens', '12', 'Hello'])).get(0);
  // presence/frequency penalties have no CLI flags: compare without them too.
  const noPen = await openai.completions.create({ prompt: 'Hello', max_tokens: 12, temperature: 0.8, top_p: 0.9,
    top_k: 20, min_p: 0.05, seed: 99, repetition_penalty: 1.2 });
  assert.equal(noPen.choices[0].text, ref.text);
  assert.ok(typeof resp.choices[0].text === 'string');
  // logit_bias: +100 on one token makes it the greedy pick every time.
  const tok = await (await fetch(`${server.baseURL}/tokenize`, { method: 'POST',
    body: JSON.stringify({ prompt: ' world', add_special_tokens: false }) })).json();
  const piece = (await (await fetch(`${server.baseURL}/detokenize`, { method: 'POST',
    body: JSON.stringify({ tokens: [tok.tokens[0]] }) })).json()).prompt;
  const biased = await openai.completions.create({ prompt: 'Hello', max_tokens: 3, temperature: 0,
    logit_bias: { [tok.tokens[0]]: 100 }, logprobs: 0 });
  assert.deepEqual(biased.choices[0].logprobs.tokens, [piece, piece, piece]);
});

test('every sampling field maps to the engine as iris generate maps it (seeded, token for token)', async () => {
  // Each field alone, so a field that is dropped or mis-mapped changes that case's tokens.
  const cases = [
    [{ temperature: 1.3 }, ['--temperature', '1.3']],
    [{ temperature: 1, top_p: 0.5 }, ['--temperature', '1', '--top-p', '0.5']],
    [{ temperature: 1, top_k: 3 }, ['--temperature', '1', '--top-k', '3']],
    [{ temperature: 1, min_p: 0.2 }, ['--temperature', '1', '--min-p', '0.2']],
    [{ temperature: 1, presence_penalty: 1.5 }, ['--temperature', '1', '--presence-penalty', '1.5']],
    [{ temperature: 1, frequency_penalty: 1.5 }, ['--temperature', '1', '--frequency-penalty', '1.5']],
    [{ temperature: 1, repetition_penalty: 1.8 }, ['--temperature', '1', '--repetition-penalty', '1.8']],
    [{ temperature: 0, min_tokens: 10 }, ['--temperature', '0', '--min-tokens', '10']],
    // Unset sampling fields take generation_config.json's (temperature 0.7, top_p 0.9).
    [{}, ['--temperature', '0.7', '--top-p', '0.9']],
  ];
  const outputs = new Set();
  for (const [fields, flags] of cases) {
    const http = await openai.completions.create({ prompt: 'Hello', max_tokens: 24, seed: 5, logprobs: 0,
      return_tokens_as_token_ids: true, ...fields });
    const ids = http.choices[0].logprobs.tokens.map((t) => Number(t.slice('token_id:'.length)));
    const cli = await cliGenerate(['--prompt', 'Hello', '--max-tokens', '24', '--seed', '5', ...flags]);
    assert.deepEqual(ids, cli.output_ids, `${JSON.stringify(fields)} vs iris generate ${flags.join(' ')}`);
    outputs.add(JSON.stringify(ids));
  }
  // The cases differ from each other: each field did something.
  assert.ok(outputs.size >= cases.length - 1, `only ${outputs.size} distinct outputs for ${cases.length} cases`);
});

test('errors raise the SDK error class with the right status and name the field', async () => {
  const cases = [
    [{ messages: [{ role: 'user', content: 'hi' }], temperature: -1 }, OpenAI.BadRequestError, 400, 'temperature'],
    [{ messages: [{ role: 'user', content: 'hi' }], top_p: 'x' }, OpenAI.BadRequestError, 400, 'top_p'],
    [{ messages: [{ role: 'wizard', content: 'hi' }] }, OpenAI.BadRequestError, 400, 'messages[0].role'],
    [{ messages: [] }, OpenAI.BadRequestError, 400, 'messages'],
    [{ messages: [{ role: 'user', content: 'hi' }], n: 99 }, OpenAI.BadRequestError, 400, 'n'],
    [{ messages: [{ role: 'user', content: 'hi' }], max_tokens: 100000 }, OpenAI.BadRequestError, 400, 'max_tokens'],
    [{ messages: [{ role: 'user', content: 'hi' }], logit_bias: { 999999: 5 } }, OpenAI.BadRequestError, 400, 'logit_bias'],
    [{ messages: [{ role: 'user', content: 'hi' }], stop: 7 }, OpenAI.BadRequestError, 400, 'stop'],
    [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }] },
      OpenAI.BadRequestError, 400, 'messages[0].content[0].image_url'],
    [{ model: 'gpt-17', messages: [{ role: 'user', content: 'hi' }] }, OpenAI.NotFoundError, 404, 'model'],
  ];
  for (const [body, cls, status, field] of cases) {
    await assert.rejects(openai.chat.completions.create({ model: 'iris-tiny', ...body }), (e) => {
      assert.ok(e instanceof cls, `${JSON.stringify(body)}: ${e.constructor.name} ${e.message}`);
      assert.equal(e.status, status);
      assert.ok(e.message.includes(field), `${e.message} should name ${field}`);
      return true;
    });
  }
  await assert.rejects(openai.completions.create({ prompt: 'x', suffix: 'y' }), OpenAI.BadRequestError);
  await assert.rejects(openai.completions.create({ prompt: [] }), OpenAI.BadRequestError);
  await assert.rejects(openai.completions.create({ prompt: [[1, 2], [999999]] }), (e) => e.status === 400 &&
    e.message.includes('prompt[1]'));
  // Malformed JSON and wrong types, raw.
  const raw = await fetch(`${server.baseURL}/v1/chat/completions`, { method: 'POST', body: '{"messages": [' });
  assert.equal(raw.status, 400);
  const err = await raw.json();
  assert.equal(err.error.type, 'invalid_request_error');
  assert.ok(err.error.message.includes('JSON'));
  const notFound = await fetch(`${server.baseURL}/v2/nothing`);
  assert.equal(notFound.status, 404);
  const wrongMethod = await fetch(`${server.baseURL}/v1/chat/completions`);
  assert.equal(wrongMethod.status, 405);
  // A bad request disturbed nothing.
  await waitIdle(server);
});

test('tokenize / detokenize as vLLM shapes them; detokenize cleans up like transformers', async () => {
  const t = await (await fetch(`${server.baseURL}/tokenize`, { method: 'POST',
    body: JSON.stringify({ prompt: 'Hello world' }) })).json();
  assert.equal(t.count, t.tokens.length);
  assert.equal(t.max_model_len, 512);
  const d = await (await fetch(`${server.baseURL}/detokenize`, { method: 'POST',
    body: JSON.stringify({ tokens: t.tokens, skip_special_tokens: true }) })).json();
  assert.equal(d.prompt, 'Hello world');
  const bad = await fetch(`${server.baseURL}/detokenize`, { method: 'POST', body: JSON.stringify({ tokens: [-1] }) });
  assert.equal(bad.status, 400);
  assert.ok((await bad.json()).error.message.startsWith('tokens'));
});

test('health and version', async () => {
  const h = await fetch(`${server.baseURL}/health`);
  assert.equal(h.status, 200);
  const v = await (await fetch(`${server.baseURL}/version`)).json();
  assert.match(v.version, /^\d+\.\d+\.\d+/);
});

test('500 concurrent streams complete, each equal to its solo greedy run', async () => {
  const prompts = ['Hello', 'The cat', 'Once upon', 'A dog', 'My friend', 'The world', 'Today', 'In the box'];
  const solo = [];
  for (const p of prompts)
    solo.push((await openai.completions.create({ prompt: p, max_tokens: 12, temperature: 0, ignore_eos: true })).choices[0].text);
  const runs = [];
  for (let i = 0; i < 500; ++i) {
    runs.push((async () => {
      const k = i % prompts.length;
      const stream = await openai.completions.create({ prompt: prompts[k], max_tokens: 12, temperature: 0,
        ignore_eos: true, stream: true });
      let text = '';
      let finish = null;
      for await (const c of stream) {
        text += c.choices[0]?.text ?? '';
        finish = c.choices[0]?.finish_reason ?? finish;
      }
      return { k, text, finish };
    })());
  }
  const results = await Promise.all(runs);
  assert.equal(results.length, 500);
  for (const r of results) {
    assert.equal(r.text, solo[r.k]);
    assert.equal(r.finish, 'length');
  }
  await waitIdle(server);
});

test('300 clients that disconnect mid-stream leave every KV block free', async () => {
  const runs = [];
  let aborted = 0;
  for (let i = 0; i < 300; ++i) {
    runs.push((async () => {
      const ac = new AbortController();
      const stream = await openai.completions.create({ prompt: 'Hello', max_tokens: 400, temperature: 0,
        ignore_eos: true, stream: true }, { signal: ac.signal });
      let n = 0;
      try {
        for await (const c of stream) {
          if (++n === 2) ac.abort();
        }
      } catch (e) {
        if (!(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError')) throw e;
      }
      // Aborted after the second chunk of a 400-token stream.
      if (ac.signal.aborted && n < 400) aborted++;
    })());
  }
  await Promise.all(runs);
  assert.equal(aborted, 300);
  const info = await waitIdle(server, 30000);
  assert.equal(info.kvBlocksFree, info.kvBlocksTotal);
});

test('raw SSE framing and keep-alive reuse', async () => {
  const res = await fetch(`${server.baseURL}/v1/chat/completions`, { method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': 'abc-123' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, temperature: 0, stream: true,
      stream_options: { include_usage: true } }) });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  assert.equal(res.headers.get('x-request-id'), 'abc-123');
  const events = parseSSE(assert, await res.text());
  assert.equal(events[0].choices[0].delta.role, 'assistant');
  const usage = events[events.length - 1];
  assert.deepEqual(usage.choices, []);
  assert.equal(usage.usage.completion_tokens, 8);
});
