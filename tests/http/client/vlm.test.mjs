// Vision-language models through the official openai client: Gemma 3 with images, Qwen2.5-VL
// with images, a video as frames and a video file, each with
// `openai.chat.completions.create`, against the independent PyTorch reference's outputs
// (tests/parity/make_gemma3.py's chat_fixtures.json; tests/qwen_vl/make_qwen_vl_checkpoints.py's
// fixtures.json; tests/qwen_vl/check_qwen_vl_video_file.py's video_file/reference.json).
// Greedy ids identical, logprobs within the tolerance, the prompt's token count the
// reference's expanded prompt's. The Python checks beside the fixtures also cover gRPC and
// tensor parallelism; these pin the front door a client library actually uses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { startServer, stopServer, client, waitIdle } from './harness.mjs';

const GEMMA3 = process.env.IRIS_GEMMA3_DIR;
const QWEN_VL = process.env.IRIS_QWEN_VL_DIR;

function dataURL(file, mime) {
  const type = mime ?? (file.endsWith('.png') ? 'image/png' : 'image/jpeg');
  return `data:${type};base64,${fs.readFileSync(file).toString('base64')}`;
}

function maxDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  return Math.max(0, ...a.map((x, i) => Math.abs(x - b[i])));
}

// One greedy chat completion; its ids (as token_id:N), logprobs and prompt size checked.
async function checkChat(openai, model, content, want, tolerance, what) {
  const r = await openai.chat.completions.create({
    model, messages: [{ role: 'user', content }], max_tokens: want.ids.length, temperature: 0,
    logprobs: true, ignore_eos: true, return_tokens_as_token_ids: true });
  const lp = r.choices[0].logprobs.content;
  const ids = lp.map((e) => Number(e.token.slice('token_id:'.length)));
  assert.deepEqual(ids, want.ids, `${what}: greedy ids`);
  const d = maxDiff(lp.map((e) => e.logprob), want.logprobs);
  assert.ok(d <= tolerance, `${what}: logprob max diff ${d} > ${tolerance}`);
  assert.equal(r.usage.prompt_tokens, want.promptTokens, `${what}: prompt tokens`);
  return d;
}

test('Gemma 3: images as data: URLs match the reference', { skip: !GEMMA3 && 'IRIS_GEMMA3_DIR unset' }, async () => {
  const { cases } = JSON.parse(fs.readFileSync(path.join(GEMMA3, 'chat_fixtures.json'), 'utf8'));
  const server = await startServer(['--threads', '2', '--max-num-batched-tokens', '12'],
    { model: path.join(GEMMA3, 'gemma3-mm') });
  try {
    const openai = client(server);
    for (const c of cases) {
      assert.equal(c.messages.length, 1, 'one user turn per case');
      const content = c.messages[0].content.map((p) => (p.type === 'text' ? { type: 'text', text: p.text }
        : { type: 'image_url', image_url: { url: dataURL(p.file) } }));
      await checkChat(openai, 'gemma3-mm', content,
        { ids: c.output_ids, logprobs: c.logprobs, promptTokens: c.prompt_ids.length }, 1e-4, c.rendered);
    }
    // A truncated image: a 400 (BadRequestError) naming the part; the server keeps serving.
    await assert.rejects(openai.chat.completions.create({ model: 'gemma3-mm', max_tokens: 2, messages: [{
      role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
        { type: 'text', text: 'hi' }] }] }), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
      assert.match(e.message, /messages\[0\]\.content\[0\]/);
      return true;
    });
    const info = await waitIdle(server);
    assert.equal(info.kvBlocksFree, info.kvBlocksTotal);
  } finally {
    await stopServer(server);
  }
});

test('Qwen2.5-VL: images, a video as frames and a video file match the reference',
  { skip: !QWEN_VL && 'IRIS_QWEN_VL_DIR unset' }, async (t) => {
    const fx = JSON.parse(fs.readFileSync(path.join(QWEN_VL, 'fixtures.json'), 'utf8'))['qwen25vl-hub'];
    const server = await startServer(['--threads', '2', '--max-num-batched-tokens', '16'],
      { model: path.join(QWEN_VL, 'qwen25vl-hub') });
    try {
      const openai = client(server);
      const tol = 1e-3;
      const chat = fx.chat;
      await checkChat(openai, 'qwen25vl-hub', [
        ...chat.files.map((f) => ({ type: 'image_url', image_url: { url: dataURL(f) } })),
        { type: 'text', text: chat.text }],
      { ids: chat.ids, logprobs: chat.logprobs, promptTokens: chat.prompt.length }, tol, 'two images');

      const v = fx.video_chat;
      await checkChat(openai, 'qwen25vl-hub', [
        { type: 'video_url', video_url: { url: v.files.map((f) => dataURL(f)), fps: v.fps } },
        { type: 'text', text: v.text }],
      { ids: v.ids, logprobs: v.logprobs, promptTokens: v.prompt.length }, tol, 'video as frames');

      const refFile = path.join(QWEN_VL, 'video_file', 'reference.json');
      if (fs.existsSync(refFile)) {
        const r = JSON.parse(fs.readFileSync(refFile, 'utf8'));
        await checkChat(openai, 'qwen25vl-hub', [
          { type: 'video_url', video_url: { url: dataURL(r.file, 'video/mp4') } },
          { type: 'text', text: r.text }],
        { ids: r.ids, logprobs: r.logprobs, promptTokens: r.prompt.length }, tol, 'video file (MP4)');
        // A truncated file: 400 naming the part.
        const bytes = fs.readFileSync(r.file);
        await assert.rejects(openai.chat.completions.create({ model: 'qwen25vl-hub', max_tokens: 2, messages: [{
          role: 'user', content: [{ type: 'video_url', video_url: {
            url: `data:video/mp4;base64,${bytes.subarray(0, bytes.length >> 1).toString('base64')}` } }] }] }),
        (e) => {
          assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
          assert.match(e.message, /messages\[0\]\.content\[0\]\.video_url\.url/);
          return true;
        });
      } else {
        // Without a video decoder (or the ffmpeg CLI) there is no file reference: say so.
        t.diagnostic('video file not checked: no video_file/reference.json (a build without FFmpeg, or no ffmpeg CLI)');
      }
      const info = await waitIdle(server);
      assert.equal(info.kvBlocksFree, info.kvBlocksTotal);
    } finally {
      await stopServer(server);
    }
  });
