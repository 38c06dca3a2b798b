// Three replicas behind HAProxy: 300 requests over both APIs through the balancer all succeed
// with the greedy text one replica gives directly, and every replica serves a share (counted
// from the replicas' own logs and, independently, from the balancer's x-iris-replica header).
// The same cluster runs Prometheus, which must list every replica as a target.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCluster, stopCluster, clientsFor, references, runLoad, logCounts, logLines, replicasOf, serverStates, sleep,
  pinnedLongStreams,
} from './cluster.mjs';

const KINDS = ['http-chat', 'http-completion', 'grpc-generate', 'grpc-chat'];
let c;

before(async () => { c = await startCluster({ prometheus: true }); });

after(async () => {
  const res = await stopCluster(c);  // normally stopped by the last test already
  assert.deepEqual(res.left, [], `processes left behind: ${res.left}`);
  assert.equal(res.exit?.code, 0, `run-cluster.sh should drain and exit 0:\n${res.out}`);
});

test('300 requests over both APIs: all succeed, each equal to its greedy reference, every replica serves', async (t) => {
  const states = await serverStates(c);
  for (const r of ['r0', 'r1', 'r2']) {
    assert.equal(states[`http_replicas/${r}`], 'UP');
    assert.equal(states[`grpc_replicas/${r}`], 'UP');
  }
  const tr = Date.now();
  const refs = await references(c, KINDS, 16);
  t.diagnostic(`references in ${(Date.now() - tr) / 1000} s`);
  const before = logCounts(c);
  const clients = clientsFor(c);
  const t0 = Date.now();
  // Half the HTTP requests stream (SSE through the balancer), all gRPC calls are streams.
  const records = await runLoad(clients, { kinds: KINDS, concurrency: 12, maxTokens: 16, maxRequests: 300,
    maxMs: 90000 }).done;
  const secs = (Date.now() - t0) / 1000;
  clients.grpc.close();
  assert.equal(records.length, 300);
  const failed = records.filter((r) => !r.ok);
  assert.deepEqual(failed.map((r) => `${r.kind}: ${r.error}`), []);
  for (const r of records) assert.equal(r.text, refs.get(`${r.kind}/${r.i}`), `${r.kind} prompt ${r.i} via ${r.replica}`);

  const after = logCounts(c);
  const byHeader = {};
  for (const r of records) byHeader[r.replica] = (byHeader[r.replica] ?? 0) + 1;
  let total = 0;
  const shares = {};
  for (const { name } of replicasOf(c)) {
    const http = after[name].http - before[name].http;
    const grpc = after[name].grpc - before[name].grpc;
    shares[name] = { http, grpc };
    total += http + grpc;
    assert.ok(http > 0 && grpc > 0, `${name} served no share of one API: ${JSON.stringify(shares[name])}`);
    assert.ok(http + grpc >= 30, `${name} served only ${http + grpc} of 300`);
    assert.equal(http + grpc, byHeader[name], `${name}: log count vs the balancer's header count`);
  }
  assert.equal(total, 300, `the replicas logged ${total} requests: ${JSON.stringify(shares)}`);
  t.diagnostic(`300 requests in ${secs.toFixed(1)} s; per replica (from their logs): ${JSON.stringify(shares)}`);
});

// A buffering proxy would hold the events back until the generation ends. The client reads
// the first event of a long stream and hangs up: the replica must log the request as
// ended early (fewer tokens than asked), which it can only if the event came through at once.
test('SSE through the balancer is not buffered: the first event arrives while the generation runs', async (t) => {
  const { openai } = clientsFor(c);
  const outcomes = [];
  for (let attempt = 0; attempt < 3; ++attempt) {
    const user = `sse-probe-${process.pid}-${attempt}`;
    // Eight choices of 500 tokens: each engine step is eight sequences, so the generation
    // lasts long enough to tell a forwarded first event from a buffered one.
    const stream = await openai.completions.create({ prompt: 'Hello', max_tokens: 500, n: 8, temperature: 1, seed: 7,
      ignore_eos: true, stream: true, user });
    for await (const chunk of stream) {
      assert.ok(chunk.choices[0].text !== undefined);
      break;  // leaves the loop: the SDK aborts the request
    }
    let line;
    for (let i = 0; i < 100 && !line; ++i) {
      line = Object.values(logLines(c)).flat().find((l) => l.includes(` user=${user}`));
      if (!line) await sleep(50);
    }
    assert.ok(line, `no log line for ${user}`);
    const tokens = Number(line.match(/completion_tokens=(\d+)/)[1]);
    outcomes.push(tokens);
    if (tokens < 4000) break;
  }
  t.diagnostic(`completion tokens when the client hung up after the first event: ${outcomes.join(', ')} (of 8 × 500)`);
  assert.ok(outcomes.at(-1) < 4000, `the stream ran to its end before the client saw an event: ${outcomes}`);
});

test('Prometheus scrapes every replica and the balancer', async (t) => {
  const replicas = replicasOf(c);
  const expected = new Set(replicas.map((r) => `http://127.0.0.1:${r.http_port}/metrics`));
  const metricsThere = (await fetch(`http://127.0.0.1:${replicas[0].http_port}/metrics`)).status === 200;
  const t0 = Date.now();
  let targets = [];
  // Each target is scraped within one scrape interval (5 s) of Prometheus's start.
  while (Date.now() - t0 < 20000) {
    const body = await (await fetch(`http://127.0.0.1:${c.info.prometheus_port}/api/v1/targets`)).json();
    targets = body.data.activeTargets;
    const scraped = targets.filter((x) => x.lastScrape && !x.lastScrape.startsWith('0001'));
    if (scraped.length === replicas.length + 1) break;
    await sleep(250);
  }
  const iris = targets.filter((x) => x.labels.job === 'iris');
  assert.deepEqual(new Set(iris.map((x) => x.scrapeUrl)), expected);
  assert.deepEqual(iris.map((x) => x.labels.replica).sort(), replicas.map((r) => r.name));
  const haproxy = targets.find((x) => x.labels.job === 'haproxy');
  assert.equal(haproxy.health, 'up', `HAProxy's exporter: ${haproxy.lastError}`);
  for (const x of iris) {
    assert.ok(!x.lastScrape.startsWith('0001'), `${x.scrapeUrl} never scraped`);
    if (metricsThere) assert.equal(x.health, 'up', `${x.scrapeUrl}: ${x.lastError}`);
  }
  if (!metricsThere) {
    t.diagnostic(`iris serve has no GET /metrics yet (${iris[0].lastError}): targets scraped but down`);
  }
});

// Last: the whole cluster stops on SIGTERM to run-cluster.sh. Streams under way through the
// balancer finish (HAProxy soft-stops, the replicas drain), then every process it started exits.
test('SIGTERM to run-cluster.sh drains: streams under way finish, then everything exits', async (t) => {
  const clients = clientsFor(c);
  const long = await pinnedLongStreams(c, clients, 0, 300);
  const t0 = Date.now();
  c.proc.kill('SIGTERM');
  const results = await Promise.all(long.map((l) => l.done));
  clients.grpc.close();
  for (const [j, r] of results.entries()) {
    assert.ok(r.ok, `stream ${j} under way at SIGTERM failed: ${r.error}`);
    assert.equal(r.choicesDone, 8, `stream ${j}: ${r.choicesDone} of 8 choices finished`);
  }
  const res = await stopCluster(c);
  assert.equal(res.exit?.code, 0, `run-cluster.sh exit:\n${res.out}`);
  assert.deepEqual(res.left, [], `processes left behind: ${res.left}`);
  t.diagnostic(`${long.length} streams (8 × 300 tokens each) finished during the drain; stopped in ${(Date.now() - t0) / 1000} s`);
});
