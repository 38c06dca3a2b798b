// A rolling restart under steady load: each replica in turn is taken out of the balancer's
// pools, gets SIGTERM, drains, and is started again on its ports (deploy/local/replica.sh
// restart). Not one request may fail, every stream that was running on a stopped replica
// must finish with its greedy text, and every replica serves again after its restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  startCluster, stopCluster, clientsFor, references, runLoad, replicaCmd, replicasOf, serverStates, sleep,
  pinnedLongStreams, LONG_TOKENS,
} from './cluster.mjs';

const KINDS = ['http-completion', 'grpc-generate', 'http-chat', 'grpc-chat'];
// Streams long enough that some are always running when a replica is stopped.
const EXTRA = { stream: true, ignore_eos: true };
const MAX_TOKENS = 256;
let c;

before(async () => { c = await startCluster(); });

after(async () => {
  const res = await stopCluster(c);
  assert.deepEqual(res.left, [], `processes left behind: ${res.left}`);
  assert.equal(res.exit?.code, 0, `run-cluster.sh should drain and exit 0:\n${res.out}`);
});

test('rolling restart of every replica under steady load: zero failed requests', async (t) => {
  const refs = await references(c, KINDS, MAX_TOKENS, EXTRA);
  const clients = clientsFor(c);
  let stop = false;
  const load = runLoad(clients, { kinds: KINDS, concurrency: 6, maxTokens: MAX_TOKENS, extra: EXTRA,
    maxRequests: 5000, maxMs: 120000, stop: () => stop });
  await sleep(1000);
  const oldPids = replicasOf(c).map((r) => r.pid);
  const restarts = [];
  const long = [];
  for (let k = 0; k < oldPids.length; ++k) {
    const name = `r${k}`;
    // Two long streams (one per API) certain to be running on it when it gets SIGTERM: the
    // other replicas are held out of the pools while they start.
    long.push(...await pinnedLongStreams(c, clients, k));
    const t0 = Date.now();
    await replicaCmd(c, 'restart', k);
    restarts.push({ name, at: t0, back: Date.now() });
    await sleep(1000);  // it takes requests again before the next one goes
  }
  stop = true;
  const records = await load.done;
  const longResults = await Promise.all(long.map((l) => l.done));
  clients.grpc.close();
  for (const [j, r] of longResults.entries()) {
    assert.ok(r.ok, `long stream ${j} on ${long[j].replica} failed: ${r.error}`);
    assert.equal(r.replica, long[j].replica);
    assert.equal(r.choicesDone, 8, `long stream ${j}: ${r.choicesDone} of 8 choices finished`);
  }

  const failed = records.filter((r) => !r.ok);
  assert.deepEqual(failed.map((r) => `${r.kind} via ${r.replica}: ${r.error}`), [], 'failed requests');
  for (const r of records) {
    assert.equal(r.text, refs.get(`${r.kind}/${r.i}`), `${r.kind} prompt ${r.i} via ${r.replica}`);
  }
  const newPids = replicasOf(c).map((r) => r.pid);
  for (let k = 0; k < oldPids.length; ++k) assert.notEqual(newPids[k], oldPids[k], `replica ${k} was not restarted`);
  const states = await serverStates(c);
  for (const [srv, st] of Object.entries(states)) assert.equal(st, 'UP', `${srv} after the restarts`);
  // The streams running on a replica when it got SIGTERM are the requests it logged between
  // "received SIGTERM" and "stopped": all must have ended ok.
  let drained = 0;
  for (const { name, back } of restarts) {
    const log = readFileSync(replicasOf(c).find((r) => r.name === name).log, 'utf8').split('\n');
    const from = log.findIndex((l) => l.includes('received SIGTERM'));
    const to = log.findIndex((l, i) => i > from && l.includes('] stopped'));
    assert.ok(from >= 0 && to > from, `${name} did not log a drain`);
    const during = log.slice(from, to).filter((l) => / api=(http|grpc) id=/.test(l));
    for (const l of during) assert.match(l, / status=ok /, `${name} ended a stream during its drain: ${l}`);
    drained += during.length;
    const after = records.filter((r) => r.replica === name && r.startedAt > back);
    assert.ok(after.length > 0, `${name} served nothing after its restart`);
  }
  assert.ok(drained >= 2 * restarts.length, `only ${drained} streams were running on a replica when it was stopped`);
  t.diagnostic(`${records.length} requests, 0 failed; ${drained} streams were running on a replica when it was `
    + `stopped and all finished (${long.length} of them long ones, 8 × ${LONG_TOKENS} tokens); restarts took ${restarts.map((r) => ((r.back - r.at) / 1000).toFixed(1)).join(', ')} s`);
});
