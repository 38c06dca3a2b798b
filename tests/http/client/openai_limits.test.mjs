// The HTTP API's limits and failures, each on a server of its own: API key, body size, queue
// bound, drain, engine failure, a client that never reads, images as data: URLs and from
// allowed hosts on a vision checkpoint (against the independent reference's fixtures).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import OpenAI from 'openai';
import { startServer, stopServer, client, waitIdle, serverInfo, assertFiniteLogprobs } from './harness.mjs';

const VISION = process.env.IRIS_VISION_DIR;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('API key: missing or wrong key is 401 (AuthenticationError); /health is exempt', async () => {
  const server = await startServer(['--api-key', 'sekret']);
  try {
    for (const key of ['wrong', 'sekret2']) {
      await assert.rejects(client(server, { apiKey: key }).models.list(), (e) => {
        assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
        assert.equal(e.status, 401);
        return true;
      });
    }
    const none = await fetch(`${server.baseURL}/v1/chat/completions`, { method: 'POST', body: '{}' });
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.type, 'authentication_error');
    const ok = await client(server, { apiKey: 'sekret' }).chat.completions.create({
      messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0 });
    assert.equal(ok.usage.completion_tokens > 0, true);
    assert.equal((await fetch(`${server.baseURL}/health`)).status, 200);
  } finally {
    await stopServer(server);
  }
});

test('a body over --max-request-bytes is 413; a full queue is 429 (RateLimitError)', async () => {
  const server = await startServer(['--max-request-bytes', '4096', '--max-queue', '1', '--max-num-seqs', '1']);
  try {
    const openai = client(server);
    await assert.rejects(openai.completions.create({ prompt: 'x'.repeat(10000), max_tokens: 1 }), (e) => {
      assert.equal(e.status, 413);
      return true;
    });
    // One sequence slot and one waiting place: of a burst of 30 requests, some are refused with
    // 429 (RateLimitError) and every other one completes.
    const results = await Promise.allSettled(Array.from({ length: 30 }, () =>
      openai.completions.create({ prompt: 'Hello', max_tokens: 32, ignore_eos: true, temperature: 0 })));
    const refused = results.filter((r) => r.status === 'rejected');
    const done = results.filter((r) => r.status === 'fulfilled');
    assert.ok(refused.length > 0, 'no request of the burst was refused');
    assert.ok(done.length > 0, 'every request of the burst was refused');
    for (const r of refused) {
      assert.ok(r.reason instanceof OpenAI.RateLimitError, `${r.reason.constructor.name}: ${r.reason.message}`);
      assert.equal(r.reason.status, 429);
    }
    for (const r of done) assert.equal(r.value.usage.completion_tokens, 32);
    await waitIdle(server);
  } finally {
    await stopServer(server);
  }
});

test('drain: /health turns 503, new requests get 503, the stream in flight finishes, exit 0', async () => {
  // One sequence at a time and 8 choices of 300 tokens: the drain lasts even on a fast machine.
  const server = await startServer(['--drain-timeout', '30', '--max-num-seqs', '1']);
  const openai = client(server);
  const stream = await openai.completions.create({ prompt: 'Hello', max_tokens: 300, ignore_eos: true, n: 8,
    temperature: 0, stream: true, stream_options: { include_usage: true } });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  server.proc.kill('SIGTERM');
  const t0 = Date.now();
  while ((await fetch(`${server.baseURL}/health`)).status !== 503 && Date.now() - t0 < 5000) await sleep(20);
  assert.equal((await fetch(`${server.baseURL}/health`)).status, 503);
  await assert.rejects(openai.completions.create({ prompt: 'Hello', max_tokens: 2 }), (e) => {
    assert.equal(e.status, 503);
    return true;
  });
  let finish = null;
  let usage = null;
  for (let r = await it.next(); !r.done; r = await it.next()) {
    usage = r.value.usage ?? usage;
    finish = r.value.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 8 * 300);
  const res = await server.exitPromise;
  assert.equal(res.code, 0);
});

test('an engine failure is 500 (InternalServerError) and the server exits 3', async () => {
  const server = await startServer(['--tensor-parallel-size', '2', '--tp-timeout', '1'],
    { env: { IRIS_FAILPOINT: 'stall_rank:1:3' } });
  const openai = client(server);
  await assert.rejects(openai.chat.completions.create({ messages: [{ role: 'user', content: 'Hello' }],
    max_tokens: 50, ignore_eos: true }), (e) => {
    assert.ok(e instanceof OpenAI.InternalServerError, e.constructor.name);
    assert.equal(e.status, 500);
    return true;
  });
  const res = await Promise.race([server.exitPromise, sleep(20000).then(() => null)]);
  assert.ok(res, 'server did not exit after the engine failed');
  assert.equal(res.code, 3);
});

test('a client that never reads is aborted at the output bound; other streams finish', async () => {
  const server = await startServer(['--max-pending-output-bytes', '65536']);
  try {
    const openai = client(server);
    const body = JSON.stringify({ prompt: 'Hello', n: 16, max_tokens: 480, ignore_eos: true, temperature: 1,
      logprobs: 20, stream: true });
    const sock = net.connect(server.http, '127.0.0.1');
    await new Promise((r) => sock.on('connect', r));
    sock.pause();  // never read
    sock.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    // Meanwhile another client streams to the end.
    const other = await openai.completions.create({ prompt: 'Hello', max_tokens: 30, ignore_eos: true,
      temperature: 0, stream: true, stream_options: { include_usage: true } });
    let usage = null;
    for await (const c of other) usage = c.usage ?? usage;
    assert.equal(usage.completion_tokens, 30);
    const t0 = Date.now();
    while (!server.log.includes('client not reading') && Date.now() - t0 < 60000) await sleep(100);
    assert.ok(server.log.includes('client not reading'), 'no log line for the slow reader');
    const info = await waitIdle(server, 30000);
    assert.equal(info.kvBlocksFree, info.kvBlocksTotal);
    sock.destroy();
  } finally {
    await stopServer(server);
  }
});

// --- images on a vision checkpoint ------------------------------------------------------------

function visionCases() {
  const fx = JSON.parse(fs.readFileSync(`${VISION}/chat_fixtures.json`, 'utf8'));
  assert.ok(fx.cases.length > 0, 'no vision chat fixtures');
  return fx.cases;
}

function dataUrl(file) {
  const mime = file.endsWith('.png') ? 'image/png' : 'image/jpeg';
  return `data:${mime};base64,${fs.readFileSync(file).toString('base64')}`;
}

function toMessages(c, urlOf) {
  return c.messages.map((m) => ({
    role: m.role,
    content: m.content.map((p) => (p.type === 'text' ? { type: 'text', text: p.text }
      : { type: 'image_url', image_url: { url: urlOf(p.file) } })),
  }));
}

async function checkCase(openai, c, urlOf, what) {
  const want = c.output_ids;
  const resp = await openai.chat.completions.create({ messages: toMessages(c, urlOf), max_tokens: want.length,
    temperature: 0, ignore_eos: true, logprobs: true, return_tokens_as_token_ids: true });
  const content = resp.choices[0].logprobs.content;
  assert.equal(content.length, want.length, what);
  assert.deepEqual(content.map((e) => Number(e.token.slice('token_id:'.length))), want, `${what}: tokens`);
  assertFiniteLogprobs(assert, content.map((e) => e.logprob), what);
  for (let i = 0; i < want.length; ++i)
    assert.ok(Math.abs(content[i].logprob - c.logprobs[i]) <= 1e-4, `${what}: logprob ${i}`);
  assert.equal(resp.usage.prompt_tokens, c.prompt_ids.length, `${what}: prompt tokens`);
}

test('data: URL images give the reference tokens; URLs outside --allowed-media-domains are never fetched', async () => {
  let connections = 0;
  const files = new Map();
  const media = http.createServer((req, res) => {
    const f = files.get(req.url);
    if (!f) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Type': f.endsWith('.png') ? 'image/png' : 'image/jpeg' });
    res.end(fs.readFileSync(f));
  });
  media.on('connection', () => connections++);
  await new Promise((r) => media.listen(0, '127.0.0.1', r));
  const mport = media.address().port;
  const server = await startServer(['--allowed-media-domains', '127.0.0.1'], { model: `${VISION}/clip-llava` });
  try {
    const openai = client(server);
    const cases = visionCases();
    for (const c of cases) await checkCase(openai, c, dataUrl, `data: ${c.rendered}`);
    // The same images fetched from an allowed host.
    let k = 0;
    const urlOf = (file) => {
      const path = `/img${k++}${file.endsWith('.png') ? '.png' : '.jpeg'}`;
      files.set(path, file);
      return `http://127.0.0.1:${mport}${path}`;
    };
    await checkCase(openai, cases[0], urlOf, 'allowed host');
    assert.ok(connections >= 1, 'the allowed host was never contacted');
    const before = connections;
    // A host not on the list (same server, other name): refused, no connection made.
    const refused = toMessages(cases[0], (f) => `http://localhost:${mport}/img0.png`);
    await assert.rejects(openai.chat.completions.create({ messages: refused, max_tokens: 2 }), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.message, /image_url\.url: host 'localhost' is not in --allowed-media-domains/);
      return true;
    });
    // A missing file on the allowed host fails that request alone.
    await assert.rejects(openai.chat.completions.create({
      messages: toMessages(cases[0], () => `http://127.0.0.1:${mport}/missing.png`), max_tokens: 2 }),
    (e) => e.status === 400 && /HTTP 404/.test(e.message));
    await sleep(200);
    assert.equal(connections, before + 1, 'only the allowed host may be contacted');
    // Garbage image bytes: 400 naming the part.
    await assert.rejects(openai.chat.completions.create({ messages: [{ role: 'user', content: [
      { type: 'image_url', image_url: { url: 'data:image/png;base64,R0lGODlhAQABAAAAACw=' } },
      { type: 'text', text: 'hi' }] }], max_tokens: 2 }),
    (e) => e.status === 400 && e.message.includes('messages[0].content[0].image_url.url'));
    await waitIdle(server);
  } finally {
    await stopServer(server);
    media.close();
  }
});

test('JSON logs: every line parses; the request line carries the x-request-id and its figures', async () => {
  const server = await startServer(['--log-format', 'json']);
  try {
    const res = await fetch(`${server.baseURL}/v1/chat/completions`, { method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'trace-42' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'Secret prompt words' }], max_tokens: 5,
        ignore_eos: true }) });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-request-id'), 'trace-42');
    const usage = (await res.json()).usage;
    // Without a header the server makes an id and returns it.
    const gen = await fetch(`${server.baseURL}/v1/completions`, { method: 'POST',
      body: JSON.stringify({ prompt: 'Hello', max_tokens: 2 }) });
    const genId = gen.headers.get('x-request-id');
    assert.ok(genId && genId.length > 0);
    await gen.json();
    await sleep(300);
    const lines = server.log.split('\n').filter((l) => l.trim());
    const objs = lines.map((l) => {
      try { return JSON.parse(l); } catch { assert.fail(`not JSON: ${l}`); }
      return null;
    });
    for (const o of objs) assert.ok(o.time && o.level && o.msg, JSON.stringify(o));
    const line = objs.find((o) => o.request_id === 'trace-42');
    assert.ok(line, 'no log line with the request id');
    assert.equal(line.msg, 'chat');
    assert.equal(line.api, 'http');
    assert.equal(line.status, 'ok');
    assert.equal(line.prompt_tokens, usage.prompt_tokens);
    assert.equal(line.completion_tokens, usage.completion_tokens);
    assert.equal(line.finish_reason, 'length');
    for (const k of ['queue_s', 'prefill_s', 'decode_s', 'ttft_s', 'e2e_s']) assert.ok(Number.isFinite(line[k]), k);
    assert.match(line.client, /^127\.0\.0\.1:\d+$/);
    assert.ok(!server.log.includes('Secret prompt words'), 'prompt text logged without --log-prompts');
    assert.ok(objs.find((o) => o.request_id === genId && o.msg === 'completions'));
  } finally {
    await stopServer(server);
  }
  const withPrompts = await startServer(['--log-prompts']);
  try {
    await client(withPrompts).completions.create({ prompt: 'Secret prompt words', max_tokens: 2 });
    await sleep(300);
    assert.ok(withPrompts.log.includes('Secret prompt words'), '--log-prompts did not log the prompt');
  } finally {
    await stopServer(withPrompts);
  }
});

test('images being decoded count against --max-queue: a burst of image requests gets 429s', async () => {
  // One decode thread whose every job first sleeps 3 s (IRIS_FAILPOINT=slow_decode): while the
  // first images wait in the pool, the engine's waiting queue is empty, so only the decode
  // pool's count can refuse the rest of the burst.
  const server = await startServer(['--max-queue', '2', '--image-decode-threads', '1'],
    { model: `${VISION}/clip-llava`, env: { IRIS_FAILPOINT: 'slow_decode:3000' } });
  try {
    assert.match(server.log, /every image decode job sleeps 3000 ms/);
    const openai = client(server);
    const c = visionCases().find((k) => k.messages.flatMap((m) => m.content).filter((p) => p.type !== 'text').length === 1);
    assert.ok(c, 'no one-image vision fixture');
    const messages = toMessages(c, dataUrl);
    const results = await Promise.allSettled(Array.from({ length: 8 }, () =>
      openai.chat.completions.create({ messages, max_tokens: 2, ignore_eos: true, temperature: 0 })));
    const refused = results.filter((r) => r.status === 'rejected');
    const done = results.filter((r) => r.status === 'fulfilled');
    assert.ok(refused.length > 0, 'no image request was refused while the decode pool was full');
    assert.ok(done.length >= 2, `only ${done.length} image requests were admitted`);
    assert.equal(refused.length + done.length, 8);
    for (const r of refused) {
      assert.equal(r.reason.status, 429, r.reason.message);
      assert.match(r.reason.message, /--max-queue 2/);
    }
    for (const r of done) assert.equal(r.value.usage.completion_tokens, 2);
    await waitIdle(server);
  } finally {
    await stopServer(server);
  }
});
