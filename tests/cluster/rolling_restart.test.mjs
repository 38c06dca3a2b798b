// A rolling restart under steady load: each replica in turn is taken out of the balancer's
// pools, gets SIGTERM, drains, and is started again on its ports (deploy/local/replica.sh
// restart). Not one request may fail, every stream that was running on a stopped replica
// must finish with its greedy text, and every replica serves again after its restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  startCluster, stopCluster, clientsFor, references, runLoad, replicaCmd, replicasOf, serverStates, sleep,
  pinnedLongStreams, longStreams, openaiClient, grpcClient, REPLICA_ARGS,
} from './cluster.mjs';

const KINDS = ['http-completion', 'grpc-generate', 'http-chat', 'grpc-chat'];
// Streams long enough that some are always running when a replica is stopped.
const EXTRA = { stream: true, ignore_eos: true };
const MAX_TOKENS = 256;
let c;

// A drain timeout long enough for the long streams on a busy machine.
before(async () => {
  c = await startCluster({
    extra: [...REPLICA_ARGS.filter((a, i, all) => a !== '--drain-timeout' && all[i - 1] !== '--drain-timeout'), '--drain-timeout', '40'] });
});

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
  const direct = [];
  for (let k = 0; k < oldPids.length; ++k) {
    const name = `r${k}`;
    const rep = replicasOf(c)[k];
    // Long streams on this replica just before its restart, through the balancer (the others
    // held out of the pools meanwhile) and to the replica directly: they run into its drain
    // unless the machine finishes them before the restart gets to SIGTERM.
    long.push(...await pinnedLongStreams(c, clients, k));
    const own = { openai: openaiClient(`http://127.0.0.1:${rep.http_port}`), grpc: grpcClient(`127.0.0.1:${rep.grpc_port}`) };
    direct.push(...(await longStreams(own, 480, 8)).map((d) => ({ ...d, name, close: () => own.grpc.close() })));
    const t0 = Date.now();
    const restart = replicaCmd(c, 'restart', k);
    await restart;
    restarts.push({ name, at: t0, back: Date.now() });
    await sleep(1000);  // it takes requests again before the next one goes
  }
  stop = true;
  const records = await load.done;
  const longResults = await Promise.all(long.map((l) => l.done));
  const directResults = await Promise.all(direct.map((d) => d.done));
  for (const d of direct) d.close();
  clients.grpc.close();
  for (const [j, r] of directResults.entries()) {
    assert.ok(r.ok, `stream ${j} sent to ${direct[j].name} before its restart failed: ${r.error}`);
    assert.equal(r.choicesDone, 8, `stream ${j} to ${direct[j].name}: ${r.choicesDone} of 8 choices finished`);
  }
  for (const [j, r] of longResults.entries()) {
    assert.ok(r.ok, `long stream ${j} on ${long[j].replica} failed: ${r.error}`);
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
  const perRestart = [];
  for (const { name, back } of restarts) {
    const log = readFileSync(replicasOf(c).find((r) => r.name === name).log, 'utf8').split('\n');
    const from = log.findIndex((l) => l.includes('received SIGTERM'));
    const to = log.findIndex((l, i) => i > from && l.includes('] stopped'));
    assert.ok(from >= 0 && to > from, `${name} did not log a drain`);
    const during = log.slice(from, to).filter((l) => / api=(http|grpc) request_id=/.test(l));
    for (const l of during) assert.match(l, / status=ok /, `${name} ended a stream during its drain: ${l}`);
    drained += during.length;
    perRestart.push(during.length);
    const after = records.filter((r) => r.replica === name && r.startedAt > back);
    assert.ok(after.length > 0, `${name} served nothing after its restart`);
  }
  // On a very slow machine the long streams could all end before the SIGTERMs; then the test
  // would show nothing about draining, which is a failure too.
  assert.ok(drained >= 1, 'no stream was running on any replica when it got SIGTERM');
  t.diagnostic(`${records.length} requests, 0 failed; ${drained} streams were running on a replica when it was `
    + `stopped and all finished (per replica: ${perRestart.join(', ')}); restarts took ${restarts.map((r) => ((r.back - r.at) / 1000).toFixed(1)).join(', ')} s`);
});
