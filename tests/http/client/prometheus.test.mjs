// GET /metrics as a real Prometheus sees it: Debian's `prometheus` scrapes a running
// `iris serve` on loopback, and the test reads the results through Prometheus's HTTP query
// API — after exactly N requests the success counters sum to N, histogram counts equal N,
// generation tokens equal the usage the clients received, the TTFT median lies within what the
// clients measured; every rejection reason provoked once moves its counter by exactly one; and
// every expression of the Grafana dashboard evaluates without error.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startServer, stopServer, client, serverInfo } from './harness.mjs';

process.env.IRIS_API_KEY = 'k';  // for `iris client info` against this keyed server
const REPO = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let server;
let prom;
let promPort;
let dir;

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function query(expr) {
  const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const j = await r.json();
  if (j.status !== 'success') throw new Error(`${expr}: ${JSON.stringify(j)}`);
  return j.data;
}

async function scalar(expr) {
  const d = await query(expr);
  assert.equal(d.resultType, 'vector', expr);
  if (d.result.length === 0) return NaN;
  return Number(d.result[0].value[1]);
}

// Waits for a scrape newer than now (the target's last scrape time).
async function freshScrape() {
  const t = Date.now() / 1000;
  for (let i = 0; i < 100; ++i) {
    const d = await (await fetch(`http://127.0.0.1:${promPort}/api/v1/targets`)).json();
    const last = d.data.activeTargets[0]?.lastScrape;
    if (last && Date.parse(last) / 1000 > t + 0.05 && d.data.activeTargets[0].health === 'up') return;
    await sleep(200);
  }
  const d = await (await fetch(`http://127.0.0.1:${promPort}/api/v1/targets`)).json();
  throw new Error(`no fresh scrape within 20 s: ${JSON.stringify(d.data.activeTargets[0])}`);
}

before(async () => {
  server = await startServer(['--max-queue', '2', '--max-num-seqs', '1', '--api-key', 'k',
    '--drain-timeout', '60']);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iris-prom-'));
  promPort = await freePort();
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), [
    'global:', '  scrape_interval: 1s', '  evaluation_interval: 1s',
    'scrape_configs:', '  - job_name: iris', '    static_configs:',
    `      - targets: ['127.0.0.1:${server.http}']`, ''].join('\n'));
  prom = spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`,
    `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${promPort}`],
  { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  prom.stderr.on('data', (d) => { log += d; });
  const t0 = Date.now();
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${promPort}/-/ready`)).status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() - t0 > 60000 || prom.exitCode !== null) throw new Error(`prometheus not ready:\n${log}`);
    await sleep(200);
  }
  await freshScrape();
});

after(async () => {
  prom?.kill('SIGTERM');
  await stopServer(server);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('after exactly N requests Prometheus sees N, their tokens and their TTFTs', async () => {
  const openai = client(server, { apiKey: 'k' });
  const N = 12;  // one in the background, N - 1 timed
  let tokens = 0;
  const ttfts = [];
  // A scrape taken while requests run passes promtool's lint.
  const background = openai.completions.create({ prompt: 'Hi', max_tokens: 60, ignore_eos: true });
  await sleep(100);
  const scrape = await (await fetch(`${server.baseURL}/metrics`)).text();
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: scrape, encoding: 'utf8' });
  assert.equal(lint.status, 0, `promtool: ${lint.stdout}${lint.stderr}`);
  assert.equal(`${lint.stdout}${lint.stderr}`.trim(), '', 'promtool reported problems');
  const bg = await background;
  tokens += bg.usage.completion_tokens;
  for (let i = 0; i < N - 1; ++i) {
    const t0 = performance.now();
    const s = await openai.completions.create({ prompt: `Hello ${i}`, max_tokens: 5 + (i % 4), temperature: 0,
      ignore_eos: true, stream: true, stream_options: { include_usage: true } });
    let first = null;
    for await (const c of s) {
      if (first === null && c.choices[0]?.text) first = (performance.now() - t0) / 1000;
      if (c.usage) tokens += c.usage.completion_tokens;
    }
    ttfts.push(first);
  }
  await freshScrape();
  const m = 'model_name="iris-tiny"';
  assert.equal(await scalar(`sum(iris_request_success_total{${m}})`), N);
  assert.equal(await scalar(`sum(iris_request_success_total{${m},finished_reason="length",api="http"})`), N);
  assert.equal(await scalar(`iris_generation_tokens_total{${m}}`), tokens);
  for (const h of ['time_to_first_token_seconds', 'e2e_request_latency_seconds', 'request_queue_time_seconds',
    'request_prefill_time_seconds', 'request_decode_time_seconds', 'request_prompt_tokens',
    'request_generation_tokens']) {
    assert.equal(await scalar(`iris_${h}_count{${m}}`), N, h);
  }
  assert.equal(await scalar(`iris_request_generation_tokens_sum{${m}}`), tokens);
  // Each request's server-side TTFT (arrival to first token) is inside what its client
  // measured (send to first chunk, which adds the HTTP round trip): the server's sum cannot
  // exceed the clients', and its median lies at or below the bucket bound above the slowest
  // client (bucket interpolation only moves it within its bucket).
  const p50 = await scalar(`histogram_quantile(0.5, sum by (le) (iris_time_to_first_token_seconds_bucket{${m}}))`);
  const hi = Math.max(...ttfts);
  assert.ok(Number.isFinite(p50) && p50 > 0, `p50 ${p50}`);
  const bounds = (await query(`iris_time_to_first_token_seconds_bucket{${m}}`)).result
    .map((r) => Number(r.metric.le)).filter(Number.isFinite).sort((a, b) => a - b);
  const above = Math.min(...bounds.filter((b) => b >= hi), Infinity);
  assert.ok(p50 <= above, `TTFT p50 ${p50} above ${above} (slowest client: ${hi})`);
  const serverSum = await scalar(`iris_time_to_first_token_seconds_sum{${m}}`);
  const clientSum = ttfts.reduce((a, b) => a + b, 0);
  assert.ok(serverSum > 0 && serverSum <= clientSum, `server TTFT sum ${serverSum}, clients' ${clientSum}`);
});

test('each rejection reason provoked once moves its counter by exactly one', async () => {
  const get = async () => {
    await freshScrape();
    const d = await query('iris_request_rejected_total');
    const out = {};
    for (const r of d.result) out[`${r.metric.reason}/${r.metric.api}`] = Number(r.value[1]);
    return out;
  };
  const before = await get();
  const post = (pathName, body, headers = { authorization: 'Bearer k' }) => fetch(`${server.baseURL}${pathName}`,
    { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  assert.equal((await post('/v1/completions', JSON.stringify({ prompt: 'x', temperature: -1 }))).status, 400);
  assert.equal((await post('/v1/completions', JSON.stringify({ prompt: 'x' }), {})).status, 401);
  assert.equal((await post('/v1/completions', JSON.stringify({ prompt: 'x', model: 'nope' }))).status, 404);
  assert.equal((await post('/v1/completions', 'x'.repeat(40 << 20))).status, 413);
  // queue_full: 40 requests at once on one sequence slot (--max-num-seqs 1) and two waiting
  // places (--max-queue 2): the counter moves by exactly the number of 429s the clients got.
  const burst = await Promise.all(Array.from({ length: 40 }, () =>
    post('/v1/completions', JSON.stringify({ prompt: 'Hello', max_tokens: 64 })).then(async (r) => {
      await r.text();
      return r.status;
    })));
  const refused = burst.filter((st) => st === 429).length;
  assert.ok(refused > 0, `no 429 in a burst of 40: ${burst}`);
  assert.equal(burst.filter((st) => st !== 429 && st !== 200).length, 0, `${burst}`);
  const after = await get();
  const moved = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));
  assert.equal(moved['invalid_argument/http'], 1);
  assert.equal(moved['unauthenticated/http'], 1);
  assert.equal(moved['not_found/http'], 1);
  assert.equal(moved['too_large/http'], 1);
  assert.equal(moved['queue_full/http'], refused);
  const expected = ['invalid_argument/http', 'unauthenticated/http', 'not_found/http', 'too_large/http',
    'queue_full/http'];
  for (const [k, v] of Object.entries(moved)) if (!expected.includes(k)) assert.equal(v, 0, k);
});

test('every expression of the Grafana dashboard evaluates against the live Prometheus', async () => {
  const dash = JSON.parse(fs.readFileSync(path.join(REPO, 'deploy/grafana/iris.json'), 'utf8'));
  const exprs = dash.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).filter(Boolean);
  assert.ok(exprs.length >= 10, `only ${exprs.length} expressions`);
  let withData = 0;
  for (const e of exprs) {
    const q = e.replaceAll('$model_name', 'iris-tiny').replaceAll('$instance', '.*')
      .replaceAll('$__rate_interval', '1m');
    const d = await query(q);  // throws on a PromQL or evaluation error
    if (d.result.length > 0) withData++;
  }
  // Every panel's metric exists on a server that has served requests.
  assert.ok(withData >= exprs.length * 0.8, `${withData} of ${exprs.length} expressions returned data`);
});

test('draining: a request refused during drain moves the draining counter by one', async () => {
  const openai = client(server, { apiKey: 'k' });
  await freshScrape();
  const before = await scalar('sum(iris_request_rejected_total{reason="draining"})');
  const ac = new AbortController();
  // 16 choices of 480 tokens, one sequence at a time (--max-num-seqs 1): the drain lasts
  // seconds even on a fast machine.
  const stream = await openai.completions.create({ prompt: 'Hello', max_tokens: 480, ignore_eos: true, n: 16,
    stream: true }, { signal: ac.signal });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  server.proc.kill('SIGTERM');
  const t0 = Date.now();
  while ((await fetch(`${server.baseURL}/health`)).status !== 503 && Date.now() - t0 < 5000) await sleep(20);
  const r = await fetch(`${server.baseURL}/v1/completions`, { method: 'POST',
    headers: { authorization: 'Bearer k' }, body: JSON.stringify({ prompt: 'x', max_tokens: 2 }) });
  assert.equal(r.status, 503);
  await freshScrape();
  assert.equal(await scalar('sum(iris_request_rejected_total{reason="draining"})') - before, 1);
  ac.abort();
  try { for (let x = await it.next(); !x.done; x = await it.next()); } catch { /* aborted */ }
});
