'use strict';
// Runs against the real gateway (its own process) in front of the emulators (another process).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const { LLMClient, LLMError } = require('..');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PYTHON = process.env.LLM_GRPC_PYTHON || path.join(ROOT, '.venv', 'bin', 'python');
const KEY = 'node-test-key';
const processes = [];
let target;
let emulatorUrl;

// Wait for a line the child prints once it is ready (no polling, no timer): resolves with the `collect`
// result once it says done, rejects with the output so far if the child exits first.
function readUntil(child, stream, collect, what) {
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: stream });
    const seen = [];
    const onExit = (code) => reject(new Error(`${what} exited (code ${code}) before it was ready:\n${seen.join('\n')}`));
    child.once('exit', onExit);
    lines.on('line', (line) => {
      seen.push(line);
      const result = collect(line);
      if (result !== undefined) {
        child.off('exit', onExit);
        // Keep draining the pipe so the child never blocks on a full one.
        lines.removeAllListeners('line');
        lines.on('line', () => {});
        resolve(result);
      }
    });
  });
}

before(async () => {
  // Every process picks its own free port (port 0) and reports it: nothing to guess, nothing to collide.
  const emulators = spawn(PYTHON, ['-m', 'server.emulators', '--port', '0', '--api-key', KEY], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  processes.push(emulators);
  const urls = {};
  await readUntil(emulators, emulators.stdout, (line) => {
    const [name, url] = line.split('=', 2);
    if (name.endsWith('_BASE_URL')) urls[name] = url;
    return Object.keys(urls).length === 3 ? urls : undefined;
  }, 'the emulators');
  emulatorUrl = urls.OPENAI_BASE_URL.replace(/\/v1$/, '');
  const env = {
    ...process.env,
    OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: KEY, GOOGLE_API_KEY: KEY,
    ...urls,
    LLM_MAX_RETRIES: '0',
    LLM_ALLOW_PLAINTEXT: 'true',
    LLM_AUTH_DISABLED: 'true',
    LLM_LOG_FORMAT: 'json',
  };
  const gateway = spawn(PYTHON, ['-m', 'server', 'serve', '--port', '0', '--metrics-port', '-1'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  processes.push(gateway);
  target = await readUntil(gateway, gateway.stderr, (line) => {
    try {
      const entry = JSON.parse(line);
      return entry.event === 'serving' ? entry.address : undefined;
    } catch {
      return undefined;
    }
  }, 'the gateway');
});

after(() => {
  for (const child of processes) child.kill('SIGTERM');
});

test('complete returns content, usage and who served', async () => {
  const client = new LLMClient(target);
  const reply = await client.complete('hello node', { model: 'gemini-3.1-flash-lite' });
  assert.equal(reply.content, 'emulator reply: hello node');
  assert.equal(reply.provider, 'gemini');
  assert.equal(reply.usage.total_tokens, reply.usage.prompt_tokens + reply.usage.completion_tokens);
  assert.equal(reply.finish_reason, 'FINISH_REASON_STOP');
  client.close();
});

test('stream yields deltas as an async iterator, then exposes done', async () => {
  const client = new LLMClient(target);
  const stream = client.stream('one two three', { model: 'claude-haiku-4-5' });
  const deltas = [];
  for await (const delta of stream) deltas.push(delta);
  assert.equal(deltas.join(''), 'emulator reply: one two three');
  assert.ok(deltas.length > 1);
  assert.equal(stream.done.provider, 'anthropic');
  assert.equal(stream.done.usage.completion_tokens, 5);
  client.close();
});

test('a2a metadata reaches the provider as headers', async () => {
  const client = new LLMClient(target, { sourceAgent: 'node-agent', sessionId: 'node-session' });
  const reply = await client.complete('hi', { model: 'gpt-5.4-mini', traceId: 'node-trace-1' });
  assert.equal(reply.trace_id, 'node-trace-1');
  const log = await (await fetch(`${emulatorUrl}/_emulator/requests`)).json();
  const seen = log.filter((r) => r.method === 'POST').at(-1).headers;
  assert.equal(seen['x-trace-id'], 'node-trace-1');
  assert.equal(seen['x-source-agent'], 'node-agent');
  assert.equal(seen['x-session-id'], 'node-session');
  client.close();
});

test('a model outside the allowlist is a typed error with the allowed models', async () => {
  const client = new LLMClient(target);
  await assert.rejects(client.complete('hi', { model: 'gpt-4o' }), (error) => {
    assert.ok(error instanceof LLMError);
    assert.equal(error.codeName, 'PERMISSION_DENIED');
    assert.equal(error.reason, 'MODEL_NOT_ALLOWED');
    assert.ok(error.errorMetadata.allowed_models.split(',').includes('gpt-5.4-mini'));
    return true;
  });
  client.close();
});

test('a rate limit is a typed error with the retry delay', async () => {
  const client = new LLMClient(target);
  await assert.rejects(client.complete('hi [[emulate: status=429 retry_after=7]]', { model: 'gpt-5.4-mini' }), (error) => {
    assert.equal(error.codeName, 'RESOURCE_EXHAUSTED');
    assert.equal(error.reason, 'PROVIDER_RATE_LIMITED');
    assert.equal(error.retryDelaySeconds, 7);
    return true;
  });
  client.close();
});

test('an invalid request lists its field violations', async () => {
  const client = new LLMClient(target);
  await assert.rejects(client.complete('hi', { model: 'gpt-5.4-mini', temperature: 5 }), (error) => {
    assert.equal(error.codeName, 'INVALID_ARGUMENT');
    assert.deepEqual(error.fieldViolations.map((v) => v.field), ['temperature']);
    return true;
  });
  client.close();
});

test('the deadline expires as DEADLINE_EXCEEDED', async () => {
  const client = new LLMClient(target);
  const stream = client.stream('a b c [[emulate: token_delay_ms=400]]', { model: 'gpt-5.4-mini', timeoutMs: 300 });
  await assert.rejects(async () => {
    for await (const _ of stream) { /* drain */ }
  }, (error) => {
    assert.equal(error.codeName, 'DEADLINE_EXCEEDED');
    return true;
  });
  client.close();
});
