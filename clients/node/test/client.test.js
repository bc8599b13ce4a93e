'use strict';
// Runs against the real gateway (its own process) in front of the emulators (another process).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const net = require('node:net');
const { spawn, spawnSync } = require('node:child_process');
const { LLMClient, LLMError } = require('..');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PYTHON = process.env.LLM_GRPC_PYTHON || path.join(ROOT, '.venv', 'bin', 'python');
const KEY = 'node-test-key';
const processes = [];
let target;
let emulatorUrl;

function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitFor(check, what) {
  for (let i = 0; i < 300; i += 1) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start`);
}

before(async () => {
  const emulatorPort = await freePort();
  const gatewayPort = await freePort();
  // The emulators take PORT, PORT+1, PORT+2; a free base port is good enough for a test run.
  processes.push(spawn(PYTHON, ['-m', 'server.emulators', '--port', String(emulatorPort), '--api-key', KEY], { cwd: ROOT, stdio: 'ignore' }));
  emulatorUrl = `http://127.0.0.1:${emulatorPort}`;
  await waitFor(async () => fetch(`${emulatorUrl}/_emulator/requests`).then((r) => r.ok, () => false), 'the emulators');
  const env = {
    ...process.env,
    OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: KEY, GOOGLE_API_KEY: KEY,
    OPENAI_BASE_URL: `${emulatorUrl}/v1`,
    ANTHROPIC_BASE_URL: `http://127.0.0.1:${emulatorPort + 1}`,
    GEMINI_BASE_URL: `http://127.0.0.1:${emulatorPort + 2}`,
    LLM_MAX_RETRIES: '0',
    LLM_ALLOW_PLAINTEXT: 'true',
    LLM_AUTH_DISABLED: 'true',
  };
  processes.push(spawn(PYTHON, ['-m', 'server', 'serve', '--port', String(gatewayPort), '--metrics-port', '-1'], { cwd: ROOT, env, stdio: 'ignore' }));
  target = `127.0.0.1:${gatewayPort}`;
  await waitFor(() => spawnSync(PYTHON, ['-m', 'server', 'health', '--target', target], { cwd: ROOT }).status === 0, 'the gateway');
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

test('a JSON-schema answer comes with the gateway\'s verdict', async () => {
  const { jsonSchema } = require('..');
  const client = new LLMClient(target);
  const schema = { type: 'object', properties: { age: { type: 'integer' } }, required: ['age'] };
  const reply = await client.complete(`age? [[emulate: reply='{"age":"old"}']]`, {
    model: 'gpt-5.4-mini', response_format: jsonSchema(schema, 'person'),
  });
  assert.equal(reply.structured_output.valid, false);
  assert.equal(reply.structured_output.error, "$.age: 'old' is not of type 'integer'");
  client.close();
});

test('a tool result that answers no call is refused with the field', async () => {
  const { tool, toolResult } = require('..');
  const client = new LLMClient(target);
  const messages = [{ role: 'ROLE_USER', content: 'weather?' }, toolResult('call_1', { temp_c: 21 })];
  await assert.rejects(client.complete(messages, { model: 'gpt-5.4-mini', tools: [tool('get_weather')] }), (error) => {
    assert.equal(error.codeName, 'INVALID_ARGUMENT');
    assert.deepEqual(error.fieldViolations.map((v) => v.field), ['messages[1].tool_call_id']);
    return true;
  });
  client.close();
});
