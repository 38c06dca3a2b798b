// Session affinity with bounded load (run-cluster.sh --affinity: HAProxy hashes x-session-id
// on a consistent-hash ring, hash-balance-factor 150). A session's requests land on one
// replica over both APIs (a 5-turn chat over HTTP, another over gRPC); when many sessions
// homed on one replica run at once, that replica takes only its bounded share and the rest
// spill to the others; once the load is gone the sessions go home again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCluster, stopCluster, clientsFor, grpcStream, httpRequest, logLines, replicasOf, deadline, waitBalancerIdle,
} from './cluster.mjs';

let c;
let clients;
const tag = `aff${process.pid}`;

before(async () => {
  c = await startCluster({ affinity: true });
  clients = clientsFor(c);
});

after(async () => {
  clients?.grpc.close();
  const res = await stopCluster(c);
  assert.deepEqual(res.left, [], `processes left behind: ${res.left}`);
  assert.equal(res.exit?.code, 0, `run-cluster.sh should drain and exit 0:\n${res.out}`);
});

// Bounded load counts requests in flight: with a few of them the bound is coarse (one request
// left on a replica can move the next), so the affinity probes start on an idle balancer.
const short = async (session) => { await waitBalancerIdle(c); return shortHttp(session); };
const shortHttp = (session) => httpRequest(clients.openai, 'completion',
  { prompt: 'Hi', max_tokens: 1, temperature: 0 }, { 'x-session-id': session });
const shortGrpc = async (session) => { await waitBalancerIdle(c); return shortGrpcCall(session); };
const shortGrpcCall = (session) => grpcStream(clients.grpc, 'Generate', { text: 'Hi', maxTokens: 1, temperature: 0 },
  { 'x-session-id': session });

// Prometheus counter of a replica, or null while the replica has no /metrics.
async function metric(replica, name) {
  const res = await fetch(`http://127.0.0.1:${replica.http_port}/metrics`);
  if (res.status !== 200) return null;
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name)) sum += Number(line.split(' ').pop());
  return sum;
}

const homes = new Map();  // session id -> replica, measured on an idle cluster

test('an idle cluster sends each session id to one replica, the same for HTTP and gRPC', async () => {
  for (let s = 0; s < 45; ++s) {
    const id = `${tag}-s${s}`;
    const a = await short(id);
    const b = await short(id);
    const g = await shortGrpc(id);
    assert.ok(!a.error && !b.error && g.status === 0, `${a.error} ${b.error} ${g.error}`);
    assert.equal(a.replica, b.replica, `${id} moved between two requests on an idle cluster`);
    assert.equal(g.replica, a.replica, `${id}: gRPC and HTTP pools disagree`);
    homes.set(id, a.replica);
  }
  const per = {};
  for (const r of homes.values()) per[r] = (per[r] ?? 0) + 1;
  assert.equal(Object.keys(per).length, 3, `sessions hash to every replica: ${JSON.stringify(per)}`);
});

test('a 5-turn conversation with a session id stays on one replica (HTTP and gRPC)', async (t) => {
  const session = `${tag}-conversation`;
  const user = `${tag}-user`;
  const messages = [];
  const served = [];
  const replicas = replicasOf(c);
  let hitsBefore = null;
  for (let turn = 0; turn < 5; ++turn) {
    messages.push({ role: 'user', content: `Turn ${turn}: tell me more about the river.` });
    await waitBalancerIdle(c);
    const { data, response } = await clients.openai.chat.completions.create({ model: 'iris-tiny', messages,
      max_tokens: 24, temperature: 0, user }, { headers: { 'x-session-id': session } }).withResponse();
    const replica = response.headers.get('x-iris-replica');
    if (turn === 0) hitsBefore = await metric(replicas.find((r) => r.name === replica), 'iris_prefix_cache_hits_total');
    served.push(replica);
    messages.push({ role: 'assistant', content: data.choices[0].message.content });
  }
  assert.equal(new Set(served).size, 1, `turns went to ${served}`);
  assert.equal(served[0], homes.get(session) ?? served[0]);
  // The replica's own log has all five turns (its request lines carry the `user` field).
  const lines = logLines(c);
  for (const [name, ls] of Object.entries(lines)) {
    const n = ls.filter((l) => l.includes(` user=${user}`)).length;
    assert.equal(n, name === served[0] ? 5 : 0, `${name} logged ${n} turns`);
  }
  const home = replicas.find((r) => r.name === served[0]);
  const hitsAfter = await metric(home, 'iris_prefix_cache_hits_total');
  if (hitsBefore === null || hitsAfter === null) {
    t.diagnostic('the replicas have no /metrics: prefix-cache reuse not measured (needs iris_prefix_cache_hits_total)');
  } else {
    assert.ok(hitsAfter > hitsBefore, `prefix-cache hits on ${home.name}: ${hitsBefore} -> ${hitsAfter}`);
  }

  // The same over gRPC Chat with the session id in metadata.
  const gsession = `${tag}-grpc-conversation`;
  const gmessages = [];
  const gserved = [];
  for (let turn = 0; turn < 5; ++turn) {
    gmessages.push({ role: 'user', content: [{ text: `Turn ${turn}: and the mountains?` }] });
    await waitBalancerIdle(c);
    const r = await grpcStream(clients.grpc, 'Chat', { messages: gmessages, maxTokens: 24, temperature: 0 },
      { 'x-session-id': gsession });
    assert.equal(r.status, 0, r.error);
    gserved.push(r.replica);
    gmessages.push({ role: 'assistant', content: [{ text: r.text }] });
  }
  assert.equal(new Set(gserved).size, 1, `gRPC turns went to ${gserved}`);
  t.diagnostic(`HTTP conversation on ${served[0]}, gRPC conversation on ${gserved[0]}`);
});

test('many sessions homed on one replica at once: it takes a bounded share, the rest spill over', async (t) => {
  const per = {};
  for (const [id, r] of homes) (per[r] ??= []).push(id);
  const [home, ids] = Object.entries(per).sort((a, b) => b[1].length - a[1].length)[0];
  assert.ok(ids.length >= 10, `need 10 sessions homed on one replica, have ${ids.length}`);
  const longIds = ids.slice(0, 8);
  const lateIds = ids.slice(8, 10);
  // Eight long streams whose sessions all hash to `home`.
  const started = [];
  const streams = longIds.map((id) => {
    let onStart;
    started.push(new Promise((r) => { onStart = r; }));
    return httpRequest(clients.openai, 'completion', { prompt: 'Once upon a time', max_tokens: 480, temperature: 0,
      ignore_eos: true, stream: true }, { 'x-session-id': id }, onStart);
  });
  const placed = await Promise.race([Promise.all(started), deadline(20000).then(() => null)]);
  assert.ok(placed, 'the long streams did not start within 20 s');
  // While they run, two more sessions homed there arrive.
  const late = await Promise.all(lateIds.map((id) => shortHttp(id)));
  const done = await Promise.all(streams);
  for (const r of done) assert.ok(!r.error, r.error);
  const onHome = placed.filter((r) => r === home).length;
  assert.ok(onHome >= 1, `no session went to its home ${home}: ${placed}`);
  assert.ok(onHome < placed.length, `all 8 sessions piled on ${home}: no spill-over`);
  assert.ok(onHome <= 5, `${home} took ${onHome} of 8 concurrent streams, beyond 150% of the average`);
  // With the load gone, the sessions go home again.
  for (const id of [...longIds, ...lateIds]) assert.equal((await short(id)).replica, home, `${id} did not return home`);
  t.diagnostic(`8 concurrent sessions homed on ${home}: ${onHome} there, the others on `
    + `${placed.filter((r) => r !== home).join(',')}; 2 sessions arriving meanwhile went to ${late.map((r) => r.replica)}`);
});
