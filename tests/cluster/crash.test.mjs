// A crash under load: replica r1 gets SIGKILL while requests run on every replica. The only
// requests that may fail are the ones in flight on r1 (counted and reported); every request
// sent after the kill succeeds (the balancer retries a refused connection on another replica);
// the balancer's health checks mark r1 down in both pools within their interval; once r1 is
// started again on its ports it is marked up and serves again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCluster, stopCluster, clientsFor, references, runLoad, replicaCmd, replicasOf, serverStates, sleep, pinnedLongStreams,
  alive, waitStates,
} from './cluster.mjs';

const KINDS = ['http-completion', 'grpc-generate', 'http-chat', 'grpc-chat'];
const EXTRA = { stream: true, ignore_eos: true };
const MAX_TOKENS = 256;
// deploy/haproxy: inter 1s, fastinter 250ms, fall 2, timeout check 1s. A refused check fails
// at once, so a dead replica is down within inter + fastinter; the bound allows a slow check.
const DOWN_WITHIN_MS = 1000 + 250 + 1000;
let c;

before(async () => { c = await startCluster(); });

after(async () => {
  const res = await stopCluster(c);
  assert.deepEqual(res.left, [], `processes left behind: ${res.left}`);
  assert.equal(res.exit?.code, 0, `run-cluster.sh should drain and exit 0:\n${res.out}`);
});

test('SIGKILL one replica under load: only its streams fail, it is marked down, restarted it rejoins', async (t) => {
  const refs = await references(c, KINDS, MAX_TOKENS, EXTRA);
  const clients = clientsFor(c);
  let stop = false;
  const load = runLoad(clients, { kinds: KINDS, concurrency: 6, maxTokens: MAX_TOKENS, extra: EXTRA,
    maxRequests: 5000, maxMs: 120000, stop: () => stop });
  await sleep(1000);
  // Long streams on r1 that are still running when it dies (a slow machine may need a second
  // try to have some unfinished at the kill).
  const long = [];
  for (let attempt = 0; attempt < 3 && !long.some((l) => !l.finished); ++attempt) {
    const more = await pinnedLongStreams(c, clients, 1, 480);
    for (const l of more) l.done.then(() => { l.finished = true; });
    long.push(...more);
    await sleep(0);
  }
  const runningLong = long.filter((l) => !l.finished);
  const inflight = [...load.inflight];
  const pid = replicasOf(c)[1].pid;
  const tKill = Date.now();
  process.kill(pid, 'SIGKILL');
  while (alive(pid) && Date.now() - tKill < 5000) await sleep(5);
  const tDead = Date.now();
  assert.ok(!alive(pid), 'the killed replica still runs');
  const downMs = await waitStates(c, (st) => st['http_replicas/r1'] === 'DOWN' && st['grpc_replicas/r1'] === 'DOWN', 10000);
  const downAfter = downMs + (tDead - tKill);
  await sleep(1500);
  await replicaCmd(c, 'start', 1);
  await waitStates(c, (st) => Object.values(st).every((s) => s === 'UP'), 15000);
  const tUp = Date.now();
  await sleep(2000);
  stop = true;
  const records = await load.done;
  const longResults = await Promise.all(long.map((l) => l.done));
  clients.grpc.close();

  assert.ok(downAfter <= DOWN_WITHIN_MS, `r1 marked down ${downAfter} ms after the kill (bound ${DOWN_WITHIN_MS} ms)`);
  assert.ok(runningLong.length > 0, 'no long stream was still running on r1 at the kill');
  for (const [j, r] of longResults.entries()) {
    if (runningLong.includes(long[j])) assert.ok(!r.ok, `long stream ${j}, running on r1 at the kill, did not fail`);
    else assert.ok(r.ok, `long stream ${j}, finished before the kill, failed: ${r.error}`);
  }
  const failed = records.filter((r) => !r.ok);
  for (const r of failed) {
    assert.ok(inflight.includes(r), `a request that was not in flight at the kill failed: ${r.kind} via ${r.replica}: ${r.error}`);
    assert.ok(r.replica === 'r1' || r.replica === null, `a request on ${r.replica} failed: ${r.error}`);
  }
  const after = records.filter((r) => r.start >= tDead);
  assert.ok(after.length > 20, `only ${after.length} requests sent after the kill`);
  assert.deepEqual(after.filter((r) => !r.ok).map((r) => `${r.kind}: ${r.error}`), [], 'requests after the kill failed');
  for (const r of records.filter((x) => x.ok)) {
    assert.equal(r.text, refs.get(`${r.kind}/${r.i}`), `${r.kind} prompt ${r.i} via ${r.replica}`);
  }
  const rejoined = records.filter((r) => r.replica === 'r1' && r.startedAt > tUp);
  assert.ok(rejoined.length > 0, 'r1 served nothing after it was restarted');
  const onR1 = inflight.filter((r) => r.replica === 'r1').length;
  t.diagnostic(`${records.length} requests; in flight at the kill: ${inflight.length} (${onR1} known on r1); failed: `
    + `${failed.length} of those + the ${runningLong.length} long streams running on r1; ${after.length} sent after the kill, `
    + `all ok; r1 down in both pools ${downAfter} ms after SIGKILL; ${rejoined.length} served by r1 after its restart`);
});
