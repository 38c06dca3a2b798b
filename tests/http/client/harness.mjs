// Shared pieces of the HTTP API tests: an `iris serve` child process on free loopback ports
// (ready when both listeners are logged, or the test fails), the official openai client bound
// to it, and gRPC reference calls through `iris client ... --json`.
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import OpenAI from 'openai';

export const IRIS = process.env.IRIS_BIN;
export const MODEL_DIR = process.env.IRIS_MODEL;
const execFileP = promisify(execFile);

if (!IRIS || !MODEL_DIR) throw new Error('IRIS_BIN and IRIS_MODEL must be set');

export async function startServer(args = [], { env = {}, model = MODEL_DIR } = {}) {
  const proc = spawn(IRIS, ['serve', '--host', '127.0.0.1', '--port', '0', '--http-port', '-1',
    '--model', model, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { proc, log: '', http: 0, grpc: 0, exited: null };
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => {
    server.exited = { code, signal };
    resolve(server.exited);
  }));
  server.exitPromise = exited;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`iris serve not ready after 60 s:\n${server.log}`));
    }, 60000);
    const onData = (d) => {
      server.log += d;
      const h = server.log.match(/http listening on [\d.]+:(\d+)/);
      const g = server.log.match(/serving \S+ on [\d.]+:(\d+)/);
      if (h && g && !server.http) {
        server.http = Number(h[1]);
        server.grpc = Number(g[1]);
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`iris serve exited (${code ?? signal}) before it was ready:\n${server.log}`));
    });
  });
  server.baseURL = `http://127.0.0.1:${server.http}`;
  server.grpcAddress = `127.0.0.1:${server.grpc}`;
  return server;
}

export async function stopServer(server, signal = 'SIGTERM') {
  if (!server || server.exited) return server?.exited;
  server.proc.kill(signal);
  const timeout = new Promise((r) => setTimeout(() => r(null), 30000));
  const res = await Promise.race([server.exitPromise, timeout]);
  if (!res) server.proc.kill('SIGKILL');
  return res;
}

export function client(server, opts = {}) {
  return new OpenAI({ baseURL: `${server.baseURL}/v1`, apiKey: opts.apiKey ?? 'unused', maxRetries: 0,
    timeout: 120000, ...opts });
}

// `iris client generate|chat ... --json` against the same server: the gRPC reference.
export async function grpcCall(server, sub, args) {
  const { stdout } = await execFileP(IRIS, ['client', sub, '--address', server.grpcAddress, '--json', ...args],
    { maxBuffer: 64 << 20 });
  const messages = stdout.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  const byIndex = new Map();
  for (const m of messages) {
    const i = m.index ?? 0;
    if (!byIndex.has(i)) byIndex.set(i, { text: '', ids: [], logprobs: [], top: [], finishReason: '', usage: null });
    const c = byIndex.get(i);
    c.text += m.text ?? '';
    c.ids.push(...(m.tokenIds ?? []));
    c.logprobs.push(...(m.logprobs ?? []));
    c.top.push(...(m.topLogprobs ?? []));
    if (m.finishReason) c.finishReason = m.finishReason;
    if (m.usage) c.usage = m.usage;
  }
  return byIndex;
}

export async function serverInfo(server) {
  const { stdout } = await execFileP(IRIS, ['client', 'info', '--address', server.grpcAddress]);
  return JSON.parse(stdout.slice(0, stdout.indexOf('\n}') + 2));
}

// Waits until no request runs and every KV block is free (or fails after `ms`).
export async function waitIdle(server, ms = 20000) {
  const t0 = Date.now();
  let info;
  while (Date.now() - t0 < ms) {
    info = await serverInfo(server);
    if ((info.running ?? 0) === 0 && (info.waiting ?? 0) === 0 && info.kvBlocksFree === info.kvBlocksTotal &&
        (info.streams ?? 0) === 0) return info;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server not idle after ${ms} ms: ${JSON.stringify(info)}`);
}

export function assertFiniteLogprobs(assert, values, what) {
  for (const v of values) assert.ok(typeof v === 'number' && Number.isFinite(v), `${what}: logprob ${v}`);
}

// Reads an SSE body into its `data:` payloads, checking the framing on the way.
export function parseSSE(assert, raw) {
  assert.ok(raw.endsWith('data: [DONE]\n\n'), `stream must end with [DONE]: ...${raw.slice(-80)}`);
  const events = raw.split('\n\n');
  assert.equal(events.pop(), '');
  const payloads = [];
  for (const e of events) {
    assert.ok(e.startsWith('data: '), `event not framed as data: ${JSON.stringify(e.slice(0, 80))}`);
    assert.ok(!e.slice(6).includes('\n'), 'one line per event');
    payloads.push(e.slice(6));
  }
  assert.equal(payloads.pop(), '[DONE]');
  return payloads.map((p) => JSON.parse(p));
}
