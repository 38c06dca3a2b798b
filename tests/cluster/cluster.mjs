// Shared pieces of the cluster tests: a cluster from deploy/local/run-cluster.sh (ready when
// its state directory says so, or the test fails), clients bound to its balancer (the official
// openai client for the HTTP API, @grpc/grpc-js for gRPC), the balancer's runtime API, the
// replicas' logs, and a bounded load driver that records, per request, which replica served
// it (the balancer's x-iris-replica response header), when, and how it ended.
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const IRIS = process.env.IRIS_BIN;
export const MODEL_DIR = process.env.IRIS_MODEL ?? path.join(REPO, 'models/iris-tiny');
if (!IRIS) throw new Error('IRIS_BIN must be set');
const execFileP = promisify(execFile);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A timer that does not keep the process alive (for races against a deadline).
export const deadline = (ms) => new Promise((r) => setTimeout(r, ms).unref());

// The replicas share this machine's cores: one thread each, a short drain for the tests.
export const REPLICA_ARGS = ['--threads', '1', '--drain-timeout', '20', '--max-queue', '1024'];

export async function startCluster({ replicas = 3, affinity = false, prometheus = false, extra = REPLICA_ARGS,
  clusterArgs = [] } = {}) {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'iris-cluster-'));
  const args = [path.join(REPO, 'deploy/local/run-cluster.sh'), '--replicas', String(replicas), '--model', MODEL_DIR,
    '--grpc-port', '0', '--http-port', '0', '--state-dir', stateDir, '--iris', IRIS];
  if (affinity) args.push('--affinity');
  if (prometheus) args.push('--prometheus');
  args.push(...clusterArgs, '--', ...extra);
  const proc = spawn('bash', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const c = { proc, stateDir, out: '', exited: null };
  proc.stdout.on('data', (d) => { c.out += d; });
  proc.stderr.on('data', (d) => { c.out += d; });
  c.exitPromise = new Promise((resolve) => proc.on('exit', (code, signal) => { c.exited = { code, signal }; resolve(c.exited); }));
  const t0 = Date.now();
  while (!existsSync(path.join(stateDir, 'ready'))) {
    if (c.exited) throw new Error(`run-cluster.sh exited (${JSON.stringify(c.exited)}) before it was ready:\n${c.out}`);
    if (Date.now() - t0 > 90000) {
      await stopCluster(c);
      throw new Error(`cluster not ready after 90 s:\n${c.out}`);
    }
    await sleep(100);
  }
  c.startSeconds = (Date.now() - t0) / 1000;
  c.info = JSON.parse(readFileSync(path.join(stateDir, 'cluster.json'), 'utf8'));
  c.baseURL = `http://127.0.0.1:${c.info.http_port}`;
  c.grpcAddress = `127.0.0.1:${c.info.grpc_port}`;
  return c;
}

export function replicasOf(c) {
  return JSON.parse(readFileSync(path.join(c.stateDir, 'replicas.json'), 'utf8'));
}

export function alive(pid) {
  if (!pid) return false;
  try { process.kill(pid, 0); } catch { return false; }
  try { return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2].includes('Z'); } catch { return false; }
}

// SIGTERM to run-cluster.sh; returns its exit and every pid it had recorded that is still
// alive afterwards (killed then, so a failing test leaves nothing behind either).
export async function stopCluster(c) {
  if (!c) return null;
  const pids = [];
  try { for (const r of replicasOf(c)) pids.push(r.pid); } catch { /* not written yet */ }
  for (const f of ['balancer.pid', 'prometheus.pid']) {
    try { pids.push(Number(readFileSync(path.join(c.stateDir, f), 'utf8'))); } catch { /* absent */ }
  }
  if (!c.exited) c.proc.kill('SIGTERM');
  const res = await Promise.race([c.exitPromise, deadline(60000).then(() => null)]);
  if (!res) c.proc.kill('SIGKILL');
  const left = pids.filter(alive);
  for (const p of left) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  if (res?.code === 0 && left.length === 0 && !process.env.IRIS_KEEP_STATE) rmSync(c.stateDir, { recursive: true, force: true });
  return { exit: res, left, out: c.out };
}

// deploy/local/replica.sh --state-dir D CMD K
export async function replicaCmd(c, cmd, k) {
  const { stdout } = await execFileP('bash', [path.join(REPO, 'deploy/local/replica.sh'), '--state-dir', c.stateDir, cmd,
    String(k)], { timeout: 90000 });
  return stdout;
}

// HAProxy's runtime API over its unix socket (no socat needed here).
export function haproxyCommand(c, command) {
  return new Promise((resolve, reject) => {
    const s = net.connect(path.join(c.stateDir, 'haproxy.sock'));
    let out = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`runtime API: no answer to ${command}`)); }, 5000);
    s.on('connect', () => s.write(`${command}\n`));
    s.on('data', (d) => { out += d; });
    s.on('end', () => { clearTimeout(timer); resolve(out); });
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

// { 'http_replicas/r0': 'UP', 'grpc_replicas/r1': 'DOWN', ... }
export async function serverStates(c) {
  const csv = await haproxyCommand(c, 'show stat');
  const states = {};
  for (const line of csv.split('\n')) {
    const f = line.split(',');
    if (f.length > 18 && /^r\d+$/.test(f[1])) states[`${f[0]}/${f[1]}`] = f[17];
  }
  return states;
}

// Each replica's finished-request log lines: { r0: [...], ... }.
export function logLines(c) {
  const lines = {};
  for (const r of replicasOf(c)) {
    lines[r.name] = readFileSync(r.log, 'utf8').split('\n').filter((l) => / api=(http|grpc) request_id=/.test(l));
  }
  return lines;
}

// Waits until the balancer's states satisfy `pred` (polling every `every` ms), or fails after
// `ms`; returns the time it took.
export async function waitStates(c, pred, ms, every = 25) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const st = await serverStates(c);
    if (pred(st)) return Date.now() - t0;
    await sleep(every);
  }
  throw new Error(`balancer states not reached after ${ms} ms: ${JSON.stringify(await serverStates(c))}`);
}

// Waits until no request is in flight on any replica in the balancer's view (its bounded-load
// rule counts those), or fails after `ms`.
export async function waitBalancerIdle(c, ms = 5000) {
  const t0 = Date.now();
  let busy;
  while (Date.now() - t0 < ms) {
    const csv = await haproxyCommand(c, 'show stat');
    busy = csv.split('\n').map((l) => l.split(',')).filter((f) => f.length > 18 && /^r\d+$/.test(f[1]) && f[4] !== '0');
    if (busy.length === 0) return;
    await sleep(5);
  }
  throw new Error(`balancer not idle after ${ms} ms: ${busy.map((f) => `${f[0]}/${f[1]}=${f[4]}`)}`);
}

// Finished requests per replica and API, from the replicas' logs (one line per request).
export function logCounts(c) {
  const counts = {};
  for (const r of replicasOf(c)) {
    const text = readFileSync(r.log, 'utf8');
    const m = { http: 0, grpc: 0, failed: 0 };
    for (const line of text.split('\n')) {
      const x = line.match(/ api=(http|grpc) request_id=\S+ (?:id=\S+ )?status=(\S+) /);
      if (!x) continue;
      if (x[2] === 'ok') m[x[1]] += 1; else m.failed += 1;
    }
    counts[r.name] = m;
  }
  return counts;
}

export function openaiClient(baseURL) {
  return new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
}

const packageDef = protoLoader.loadSync(path.join(REPO, 'proto/iris/v1/inference.proto'),
  { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
const irisProto = grpc.loadPackageDefinition(packageDef).iris.v1;
export function grpcClient(address) {
  return new irisProto.Inference(address, grpc.credentials.createInsecure());
}

// One streamed gRPC call (Generate or Chat); resolves with its text, ids, the replica that
// answered and its status; never rejects.
export function grpcStream(client, method, request, metadata = {}, onStart = () => {}) {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    const call = client[method](request, md, { deadline: Date.now() + 120000 });
    const r = { text: '', ids: [], finishReason: '', replica: null, status: null, error: null };
    call.on('metadata', (m) => { r.replica = m.get('x-iris-replica')[0] ?? null; onStart(r.replica); });
    call.on('data', (msg) => {
      r.text += msg.text;
      r.ids.push(...msg.tokenIds);
      if (msg.finishReason) r.finishReason = msg.finishReason;
    });
    call.on('error', (e) => { r.error = `${e.code} ${e.details}`; });
    call.on('status', (s) => { r.status = s.code; setImmediate(() => resolve(r)); });
  });
}

// One HTTP request through the openai client, streamed or not; the same shape as grpcStream.
export async function httpRequest(openai, kind, params, headers = {}, onStart = () => {}) {
  const r = { text: '', finishReason: '', replica: null, status: null, error: null };
  try {
    const api = kind === 'chat' ? openai.chat.completions : openai.completions;
    const { data, response } = await api.create(params, { headers }).withResponse();
    r.replica = response.headers.get('x-iris-replica');
    r.status = response.status;
    onStart(r.replica);
    if (params.stream) {
      for await (const chunk of data) {
        for (const ch of chunk.choices) {
          r.text += kind === 'chat' ? (ch.delta?.content ?? '') : ch.text;
          if (ch.finish_reason) r.finishReason = ch.finish_reason;
        }
      }
    } else {
      const ch = data.choices[0];
      r.text = kind === 'chat' ? ch.message.content : ch.text;
      r.finishReason = ch.finish_reason;
    }
  } catch (e) {
    r.error = `${e.status ?? ''} ${e.message}`;
  }
  return r;
}

export const PROMPTS = ['Hello', 'Once upon a time', 'The sky is', 'My favourite food', 'In the morning',
  'A cat and a dog', 'The river', 'Tell me a story', 'Numbers: 1, 2, 3', 'The old house'];

// The request of one kind for prompt i (greedy, so every replica gives the same text).
export function requestFor(kind, i, maxTokens, extra = {}) {
  const p = PROMPTS[i % PROMPTS.length];
  switch (kind) {
    case 'http-chat': return { api: 'http', kind: 'chat', params: { model: 'iris-tiny', messages: [{ role: 'user', content: p }], max_tokens: maxTokens, temperature: 0, ...extra } };
    case 'http-completion': return { api: 'http', kind: 'completion', params: { model: 'iris-tiny', prompt: p, max_tokens: maxTokens, temperature: 0, ...extra } };
    case 'grpc-generate': return { api: 'grpc', method: 'Generate', request: { text: p, maxTokens, temperature: 0, ignoreEos: !!extra.ignore_eos } };
    case 'grpc-chat': return { api: 'grpc', method: 'Chat', request: { messages: [{ role: 'user', content: [{ text: p }] }], maxTokens, temperature: 0, ignoreEos: !!extra.ignore_eos } };
    default: throw new Error(kind);
  }
}

export function send(clients, req, headers = {}, onStart) {
  if (req.api === 'grpc') return grpcStream(clients.grpc, req.method, req.request, headers, onStart);
  return httpRequest(clients.openai, req.kind, req.params, headers, onStart);
}

// Greedy references from one replica directly (not through the balancer).
export async function references(c, kinds, maxTokens, extra = {}) {
  const r0 = replicasOf(c)[0];
  const direct = { openai: openaiClient(`http://127.0.0.1:${r0.http_port}`), grpc: grpcClient(`127.0.0.1:${r0.grpc_port}`) };
  const refs = new Map();
  for (const kind of kinds) {
    for (let i = 0; i < PROMPTS.length; ++i) {
      const res = await send(direct, requestFor(kind, i, maxTokens, extra));
      if (res.error || !res.text) throw new Error(`reference ${kind} ${i}: ${res.error}`);
      refs.set(`${kind}/${i}`, res.text);
    }
  }
  direct.grpc.close();
  return refs;
}

export function ok(res) { return !res.error && (res.status === 0 || res.status === 200); }

// Runs `concurrency` workers, each sending requests of its kind one after another until
// `stop()` says so, `maxRequests` were sent in all, or `maxMs` passed. Returns { done (a
// promise of the records), inflight (the records of requests under way) }. Each record:
// { kind, i, start, startedAt (response headers), end, replica, ok, text, error }.
export function runLoad(clients, { kinds, concurrency, maxTokens, extra = {}, maxRequests = 1000, maxMs = 60000,
  stop = () => false }) {
  const records = [];
  const t0 = Date.now();
  let sent = 0;
  const inflight = new Set();
  async function worker(w) {
    const kind = kinds[w % kinds.length];
    for (let j = 0; ; ++j) {
      if (stop() || sent >= maxRequests || Date.now() - t0 > maxMs) return;
      const i = (w + j * concurrency) % PROMPTS.length;
      sent += 1;
      const rec = { kind, i, start: Date.now(), startedAt: null, end: null, replica: null };
      inflight.add(rec);
      const res = await send(clients, requestFor(kind, i, maxTokens, extra), {}, (rep) => {
        rec.startedAt = Date.now();
        rec.replica = rep;
      });
      inflight.delete(rec);
      Object.assign(rec, { end: Date.now(), replica: res.replica ?? rec.replica, ok: ok(res), text: res.text, error: res.error });
      records.push(rec);
    }
  }
  const workers = [];
  for (let w = 0; w < concurrency; ++w) workers.push(worker(w));
  return { done: Promise.all(workers).then(() => records), inflight };
}

export function clientsFor(c) {
  return { openai: openaiClient(c.baseURL), grpc: grpcClient(c.grpcAddress) };
}

export const LONG_TOKENS = 300;

// Starts an HTTP and a gRPC stream of n × `tokens` tokens on `clients` (the balancer's or one
// replica's) and waits until both have their response headers (or 10 s). Each entry:
// { replica (x-iris-replica, or null when direct), done: promise of { ok, choicesDone, error } }.
export async function longStreams(clients, tokens = LONG_TOKENS, n = 8) {
  const started = [];
  const http = { replica: null };
  started.push(new Promise((res) => { http.resolveStart = res; }));
  http.done = (async () => {
    const r = { ok: false, choicesDone: 0, error: null };
    try {
      const { data, response } = await clients.openai.completions.create({ prompt: 'Once upon a time',
        max_tokens: tokens, n, temperature: 0, ignore_eos: true, stream: true }).withResponse();
      http.replica = response.headers.get('x-iris-replica');
      http.resolveStart();
      for await (const chunk of data) for (const ch of chunk.choices) if (ch.finish_reason === 'length') r.choicesDone += 1;
      r.ok = true;
    } catch (e) { r.error = e.message; http.resolveStart(); }
    return r;
  })();
  const g = { replica: null };
  g.done = new Promise((resolve) => {
    const call = clients.grpc.Generate({ text: 'Once upon a time', maxTokens: tokens, n, temperature: 0, ignoreEos: true });
    const r = { ok: false, choicesDone: 0, error: null };
    started.push(new Promise((res) => {
      call.on('metadata', (m) => { g.replica = m.get('x-iris-replica')[0] ?? null; res(); });
      call.on('status', res);
    }));
    call.on('data', (msg) => { if (msg.finishReason === 'length') r.choicesDone += 1; });
    call.on('error', (e) => { r.error = `${e.code} ${e.details}`; });
    call.on('status', (st) => { r.ok = st.code === 0; resolve(r); });
  });
  await Promise.race([Promise.all(started), deadline(10000)]);
  return [http, g];
}

// longStreams through the balancer, all on replica k: the other replicas are set to drain in
// both pools until the streams have started.
export async function pinnedLongStreams(c, clients, k, tokens = LONG_TOKENS) {
  const others = replicasOf(c).map((r) => r.name).filter((n) => n !== `r${k}`);
  const setState = async (names, state) => {
    for (const n of names) {
      for (const be of ['http_replicas', 'grpc_replicas']) {
        const out = (await haproxyCommand(c, `set server ${be}/${n} state ${state}`)).trim();
        if (out) throw new Error(`set server ${be}/${n} state ${state}: ${out}`);
      }
    }
  };
  await setState(others, 'drain');
  let streams;
  try {
    streams = await longStreams(clients, tokens);
  } finally {
    await setState(others, 'ready');
  }
  for (const st of streams) if (st.replica !== `r${k}`) throw new Error(`a pinned long stream went to ${st.replica}`);
  return streams;
}
