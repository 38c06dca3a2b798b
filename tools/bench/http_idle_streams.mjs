// Server memory with many open-but-idle HTTP streams: starts `iris serve` (one sequence at a
// time, so streamed requests behind a long one wait in the queue with their SSE response
// open), then measures the server's resident memory (VmRSS) at rest, with N idle keep-alive
// connections, and with N open SSE streams waiting for their first token.
// usage: node tools/bench/http_idle_streams.mjs [IRIS] [MODEL_DIR] [N]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

const iris = process.argv[2] ?? './build/server/iris';
const model = process.argv[3] ?? 'models/iris-tiny';
const N = Number(process.argv[4] ?? 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const proc = spawn(iris, ['serve', '--model', model, '--host', '127.0.0.1', '--port', '0', '--http-port', '-1',
  '--max-num-seqs', '1', '--max-queue', String(N * 2)], { stdio: ['ignore', 'pipe', 'pipe'] });
let log = '';
proc.stdout.on('data', (d) => { log += d; });
proc.stderr.on('data', (d) => { log += d; });
const t0 = Date.now();
while (!/http listening on [\d.]+:(\d+)/.test(log)) {
  if (Date.now() - t0 > 60000) throw new Error(`server not ready:\n${log}`);
  await sleep(50);
}
const port = Number(log.match(/http listening on [\d.]+:(\d+)/)[1]);
const rss = () => Number(fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) / 1024;
const threads = () => Number(fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8').match(/Threads:\s+(\d+)/)[1]);

async function post(body) {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r, j) => { s.on('connect', r); s.on('error', j); });
  const b = JSON.stringify(body);
  s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`);
  let got = '';
  s.on('data', (d) => { got += d; });
  return { s, got: () => got };
}

// Warm up one request, then rest.
const w = await post({ prompt: 'Hello', max_tokens: 8 });
await sleep(1000);
w.s.destroy();
await sleep(500);
const base = rss();
console.log(`server at rest: RSS ${base.toFixed(1)} MiB, ${threads()} threads`);

const idle = [];
for (let i = 0; i < N; ++i) {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r) => s.on('connect', r));
  idle.push(s);
}
await sleep(1000);
const withIdle = rss();
console.log(`${N} idle keep-alive connections: RSS ${withIdle.toFixed(1)} MiB (+${(withIdle - base).toFixed(1)} MiB, ` +
  `${((withIdle - base) * 1024 / N).toFixed(1)} KiB each), ${threads()} threads`);
for (const s of idle) s.destroy();
await sleep(1000);

// One long request runs; N streamed requests wait behind it with their SSE response open.
const long = await post({ prompt: 'Hello', max_tokens: 480, ignore_eos: true, stream: true });
await sleep(200);
const streams = [];
for (let i = 0; i < N; ++i) streams.push(await post({ prompt: 'Hello', max_tokens: 16, stream: true }));
const t1 = Date.now();
while (streams.some((x) => !x.got().includes('text/event-stream')) && Date.now() - t1 < 30000) await sleep(100);
const open = streams.filter((x) => x.got().includes('text/event-stream')).length;
const withStreams = rss();
console.log(`${open} open SSE streams waiting in the queue: RSS ${withStreams.toFixed(1)} MiB ` +
  `(+${(withStreams - base).toFixed(1)} MiB, ${((withStreams - base) * 1024 / N).toFixed(1)} KiB each), ${threads()} threads`);
for (const x of streams) x.s.destroy();
long.s.destroy();
await sleep(1000);
console.log(`after they closed: RSS ${rss().toFixed(1)} MiB`);
proc.kill('SIGTERM');
