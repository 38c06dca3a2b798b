// Soak and overload, bounded: many requests of every kind against one server (a vision
// checkpoint, both front doors' shared request layer): completions, streams, cancels mid-way,
// chats with images, malformed requests. Resident memory, open descriptors, threads and open
// streams must stay flat after warm-up, and every KV block must come back. Then sustained
// overload past --max-queue: refusals are fast 429s, admitted requests all complete, health
// stays 200. SOAK_REQUESTS sets the count (CI: 1,000; the full soak: 10,000, see
// docs/status.md). Latency figures are printed, never asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import OpenAI from 'openai';
import { startServer, stopServer, client, waitIdle } from './harness.mjs';

const VISION = process.env.IRIS_VISION_DIR;
const TOTAL = Number(process.env.SOAK_REQUESTS ?? 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function procStats(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rssMiB: Number(status.match(/VmRSS:\s+(\d+)/)[1]) / 1024,
    threads: Number(status.match(/Threads:\s+(\d+)/)[1]),
    fds: fs.readdirSync(`/proc/${pid}/fd`).length,
  };
}

function pct(values, q) {
  const v = [...values].sort((a, b) => a - b);
  if (!v.length) return NaN;
  return v[Math.min(v.length - 1, Math.floor((q / 100) * (v.length - 1)))];
}

test(`soak: ${TOTAL} mixed requests leave memory, descriptors, threads and KV blocks flat`, async () => {
  const server = await startServer(['--max-queue', '100000'], { model: `${VISION}/clip-llava` });
  try {
    const openai = client(server);
    const image = `data:image/png;base64,${fs.readFileSync(`${VISION}/clip-llava/image0.png`).toString('base64')}`;
    const kinds = { ok: 0, cancelled: 0, rejected: 0, image: 0 };
    const one = async (i) => {
      switch (i % 8) {
        case 0: case 1: case 2: {
          const r = await openai.completions.create({ prompt: `Hello ${i}`, max_tokens: 8, temperature: 0 });
          assert.ok(r.choices[0].finish_reason);
          kinds.ok++;
          return;
        }
        case 3: case 4: {
          const s = await openai.chat.completions.create({ messages: [{ role: 'user', content: `Hi ${i}` }],
            max_tokens: 8, stream: true });
          for await (const c of s) void c;
          kinds.ok++;
          return;
        }
        case 5: {  // cancelled after the first chunk
          const ac = new AbortController();
          const s = await openai.completions.create({ prompt: 'Hello', max_tokens: 200, ignore_eos: true,
            stream: true }, { signal: ac.signal });
          try {
            for await (const c of s) { void c; ac.abort(); }
          } catch (e) {
            if (!(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError')) throw e;
          }
          kinds.cancelled++;
          return;
        }
        case 6: {  // an image
          const r = await openai.chat.completions.create({ messages: [{ role: 'user', content: [
            { type: 'image_url', image_url: { url: image } }, { type: 'text', text: 'What?' }] }], max_tokens: 4 });
          assert.ok(r.usage.completion_tokens > 0);
          kinds.image++;
          return;
        }
        default: {  // malformed: each fails alone with 400
          const bad = [{ prompt: 'x', temperature: -3 }, { prompt: [] }, { prompt: 'x', n: 1000 },
            { prompt: 'x', stop: 5 }][Math.floor(i / 8) % 4];
          await assert.rejects(openai.completions.create(bad), (e) => e.status === 400);
          kinds.rejected++;
        }
      }
    };
    const concurrency = 32;
    let next = 0;
    let warm = null;
    const samples = [];
    const worker = async () => {
      while (next < TOTAL) {
        const i = next++;
        await one(i);
        if (i === Math.floor(TOTAL / 5) && !warm) warm = procStats(server.proc.pid);
        if (i % Math.max(1, Math.floor(TOTAL / 10)) === 0) samples.push(procStats(server.proc.pid));
      }
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: concurrency }, worker));
    const info = await waitIdle(server, 30000);
    await sleep(500);
    const end = procStats(server.proc.pid);
    console.log(`soak: ${TOTAL} requests in ${((Date.now() - t0) / 1000).toFixed(1)} s ${JSON.stringify(kinds)}; ` +
      `after warm-up ${JSON.stringify(warm)}, end ${JSON.stringify(end)}; samples ${JSON.stringify(samples.map((s) => s.rssMiB.toFixed(0)))}`);
    assert.equal(kinds.ok + kinds.cancelled + kinds.rejected + kinds.image, TOTAL);
    assert.equal(info.kvBlocksFree, info.kvBlocksTotal);
    assert.equal(info.streams, 0);
    assert.ok(end.rssMiB - warm.rssMiB < 50, `RSS grew ${(end.rssMiB - warm.rssMiB).toFixed(1)} MiB after warm-up (bound 50)`);
    // The clients' keep-alive pool (at most `concurrency` connections) may grow after warm-up.
    assert.ok(end.fds <= warm.fds + concurrency + 4, `descriptors ${warm.fds} -> ${end.fds}`);
    assert.ok(end.threads <= warm.threads, `threads ${warm.threads} -> ${end.threads}`);
    assert.equal((await fetch(`${server.baseURL}/health`)).status, 200);
  } finally {
    await stopServer(server);
  }
});

test('overload: 5x past --max-queue gives fast 429s; admitted requests complete; health stays 200', async () => {
  const maxQueue = 8;
  const seqs = 4;
  const server = await startServer(['--max-queue', String(maxQueue), '--max-num-seqs', String(seqs)]);
  try {
    const openai = client(server);
    const run = async (clients, ms) => {
      const admitted = [];
      const refused = [];
      const other = [];
      let healthBad = 0;
      const deadline = Date.now() + ms;
      const loop = async () => {
        while (Date.now() < deadline) {
          const t = Date.now();
          try {
            const r = await openai.completions.create({ prompt: 'Hello', max_tokens: 16, ignore_eos: true,
              temperature: 0 });
            assert.equal(r.usage.completion_tokens, 16);
            admitted.push(Date.now() - t);
          } catch (e) {
            if (e.status === 429) {
              refused.push(Date.now() - t);
              await sleep(5);
            } else {
              other.push(`${e.status} ${e.message}`);
            }
          }
        }
      };
      const health = async () => {
        while (Date.now() < deadline) {
          if ((await fetch(`${server.baseURL}/health`)).status !== 200) healthBad++;
          await sleep(100);
        }
      };
      await Promise.all([...Array.from({ length: clients }, loop), health()]);
      return { admitted, refused, other, healthBad };
    };
    // At capacity (every client admitted), then 5x past it.
    const capacity = seqs + maxQueue;
    const base = await run(capacity, 4000);
    const over = await run(capacity * 5, 6000);
    console.log(`at capacity (${capacity} clients): ${base.admitted.length} done, p50 ${pct(base.admitted, 50)} ms, ` +
      `p99 ${pct(base.admitted, 99)} ms, ${base.refused.length} refused`);
    console.log(`5x overload (${capacity * 5} clients): ${over.admitted.length} done, p50 ${pct(over.admitted, 50)} ms, ` +
      `p99 ${pct(over.admitted, 99)} ms (${(pct(over.admitted, 99) / pct(base.admitted, 99)).toFixed(2)}x); ` +
      `${over.refused.length} refused with 429, their p99 ${pct(over.refused, 99)} ms`);
    assert.deepEqual(base.other, []);
    assert.deepEqual(over.other, []);
    assert.ok(base.admitted.length > 0);
    assert.ok(over.admitted.length > 0);
    assert.ok(over.refused.length > 0, 'overload produced no 429');
    assert.equal(over.healthBad, 0, 'health left 200 under overload');
    await waitIdle(server);
  } finally {
    await stopServer(server);
  }
});
