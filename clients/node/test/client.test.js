'use strict';
// Runs against the real gateway (its own process) in front of the emulators (another process).
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const crypto = require('node:crypto');
const { spawn, spawnSync } = require('node:child_process');
const { LLMClient, LLMError } = require('..');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PYTHON = process.env.LLM_GRPC_PYTHON || path.join(ROOT, '.venv', 'bin', 'python');
const KEY = 'node-test-key';
const SECRET = 'node-test-jwt-secret-0123456789-abcdefghijklmnop';
const processes = [];
let target;
let secureTarget;
let emulatorUrl;
let tls;

/** Resolves with the first line of `stream` for which `parse` returns a value (the child picks its own port and says which). */
function firstLine(child, stream, parse, what) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const value = parse(line);
        if (value !== undefined) {
          stream.off('data', onData);
          stream.resume(); // keep draining so a full pipe never blocks the child
          resolve(value);
          return;
        }
      }
    };
    stream.setEncoding('utf8');
    stream.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}) before it was ready`)));
  });
}

function servingAddress(line) {
  try {
    const event = JSON.parse(line);
    return event.event === 'serving' ? event.address : undefined;
  } catch {
    return undefined;
  }
}

async function startEmulators() {
  const child = spawn(PYTHON, ['-m', 'server.emulators', '--port', '0', '--api-key', KEY], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] });
  processes.push(child);
  const urls = {};
  await firstLine(child, child.stdout, (line) => {
    const [name, url] = line.split('=');
    if (url) urls[name] = url;
    return Object.keys(urls).length === 3 ? urls : undefined;
  }, 'the emulators');
  return urls;
}

async function startGateway(urls, extraEnv = {}) {
  const env = {
    ...process.env,
    OPENAI_API_KEY: KEY, ANTHROPIC_API_KEY: KEY, GOOGLE_API_KEY: KEY,
    OPENAI_BASE_URL: urls.OPENAI_BASE_URL,
    ANTHROPIC_BASE_URL: urls.ANTHROPIC_BASE_URL,
    GEMINI_BASE_URL: urls.GEMINI_BASE_URL,
    LLM_MAX_RETRIES: '0',
    LLM_ALLOW_PLAINTEXT: 'true',
    LLM_AUTH_DISABLED: 'true',
    LLM_LOG_FORMAT: 'json',
    ...extraEnv,
  };
  const child = spawn(PYTHON, ['-m', 'server', 'serve', '--port', '0', '--metrics-port', '-1'], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  processes.push(child);
  const address = await firstLine(child, child.stderr, servingAddress, 'the gateway');
  return address.replace('127.0.0.1', 'localhost');
}

/** A CA and a server certificate for localhost, made by trustme (a dev dependency of the gateway). */
function makeCertificates(folder) {
  const script = [
    'import sys, trustme',
    'ca = trustme.CA()',
    'cert = ca.issue_cert("localhost", "127.0.0.1")',
    'folder = sys.argv[1]',
    'ca.cert_pem.write_to_path(folder + "/ca.pem")',
    'cert.cert_chain_pems[0].write_to_path(folder + "/server.pem")',
    'cert.private_key_pem.write_to_path(folder + "/server.key")',
  ].join('\n');
  const made = spawnSync(PYTHON, ['-c', script, folder], { cwd: ROOT });
  assert.equal(made.status, 0, String(made.stderr));
  return { ca: fs.readFileSync(path.join(folder, 'ca.pem')), cert: path.join(folder, 'server.pem'), key: path.join(folder, 'server.key') };
}

/** An HS256 JWT, signed here with node:crypto. */
function hs256(claims, secret = SECRET) {
  const part = (object) => Buffer.from(JSON.stringify(object)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

before(async () => {
  const urls = await startEmulators();
  emulatorUrl = urls.OPENAI_BASE_URL.replace(/\/v1$/, '');
  target = await startGateway(urls);
  tls = makeCertificates(fs.mkdtempSync(path.join(os.tmpdir(), 'llm-grpc-node-')));
  secureTarget = await startGateway(urls, {
    LLM_ALLOW_PLAINTEXT: 'false',
    LLM_TLS_CERT_FILE: tls.cert,
    LLM_TLS_KEY_FILE: tls.key,
    LLM_AUTH_DISABLED: 'false',
    LLM_JWT_HS256_SECRET: SECRET,
  });
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

test('selectModel picks the cheapest model of a tier and getMetrics counts calls', async () => {
  const client = new LLMClient(target);
  await client.complete('count me', { model: 'gpt-5.4-mini' });
  const premium = await client.selectModel({ tier: 'TIER_PREMIUM' });
  const simple = await client.selectModel({ complexity: 'COMPLEXITY_SIMPLE' });
  const metrics = await client.getMetrics();
  assert.equal(premium.tier, 'TIER_PREMIUM');
  assert.equal(simple.tier, 'TIER_FAST');
  assert.ok(metrics.total_requests >= 1);
  assert.equal(typeof metrics.total_tokens, 'number');
  client.close();
});

test('a token over TLS is served; without the token the call is UNAUTHENTICATED', async () => {
  const token = hs256({ sub: 'node-tls-agent', exp: Math.floor(Date.now() / 1000) + 300 });
  const client = new LLMClient(secureTarget, { ca: tls.ca, token });
  const reply = await client.complete('over tls', { model: 'gpt-5.4-mini' });
  assert.equal(reply.content, 'emulator reply: over tls');
  const models = await client.listModels(); // every method sends the token, not only the calls
  assert.ok(models.models.length > 0);
  client.close();

  const anonymous = new LLMClient(secureTarget, { ca: tls.ca });
  await assert.rejects(anonymous.complete('hi'), (error) => {
    assert.equal(error.codeName, 'UNAUTHENTICATED');
    return true;
  });
  anonymous.close();
});

test('a plaintext client cannot talk to the TLS port', async () => {
  const client = new LLMClient(secureTarget, { timeoutMs: 5000 });
  await assert.rejects(client.checkHealth(), (error) => error instanceof LLMError && error.codeName === 'UNAVAILABLE');
  client.close();
});

test('mTLS options need both cert and key', () => {
  assert.throws(() => new LLMClient(secureTarget, { ca: tls.ca, cert: 'x' }), /both cert and key/);
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

test('a streamed tool call arrives as fragments, then whole in done', async () => {
  const { tool } = require('..');
  const client = new LLMClient(target);
  const weather = tool('get_weather', '', { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] });
  const stream = client.stream('weather?', { model: 'claude-haiku-4-5', tools: [weather] });
  const fragments = [];
  for await (const event of stream.events()) if (event.event === 'tool_call') fragments.push(event.tool_call);
  assert.equal(stream.done.finish_reason, 'FINISH_REASON_TOOL_CALLS');
  assert.equal(stream.done.tool_calls[0].name, 'get_weather');
  assert.equal(fragments.map((f) => f.arguments_delta).join(''), stream.done.tool_calls[0].arguments_json);
  assert.ok(stream.done.usage.total_tokens > 0);
  client.close();
});
