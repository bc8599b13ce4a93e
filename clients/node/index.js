'use strict';
// Node.js client for llm.v1.LLMService: complete(), stream() as an async iterator, listModels(),
// checkHealth(), selectModel(), getMetrics(), getQuota(); a bearer token and TLS (or mTLS) by option;
// builders for agents (tools, tool results, images, documents, JSON formats, reasoning).
// The contract is loaded from protos/ at start (no generated code to keep in sync).

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'protos');
const definition = protoLoader.loadSync(path.join(PROTO_ROOT, 'llm_grpc', 'v1', 'llm.proto'), {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { LLMService } = grpc.loadPackageDefinition(definition).llm.v1;

// The google.rpc types the gateway puts in `grpc-status-details-bin`, declared here so the client needs
// no copy of googleapis' protos.
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: { field: { type: 'string', id: 1 }, description: { type: 'string', id: 2 } },
                },
              },
            },
          },
        },
      },
    },
  },
});
const Status = rpcTypes.lookupType('google.rpc.Status');
const DETAIL_TYPES = {
  'type.googleapis.com/google.rpc.ErrorInfo': rpcTypes.lookupType('google.rpc.ErrorInfo'),
  'type.googleapis.com/google.rpc.RetryInfo': rpcTypes.lookupType('google.rpc.RetryInfo'),
  'type.googleapis.com/google.rpc.BadRequest': rpcTypes.lookupType('google.rpc.BadRequest'),
};

/**
 * An error status from the gateway, with its rich details: `reason` and `errorMetadata` from
 * google.rpc.ErrorInfo, `retryDelaySeconds` from RetryInfo, `fieldViolations` from BadRequest.
 */
class LLMError extends Error {
  constructor(error) {
    super(error.details || error.message);
    this.name = 'LLMError';
    this.code = error.code;
    this.codeName = Object.keys(grpc.status).find((k) => grpc.status[k] === error.code) || 'UNKNOWN';
    this.reason = '';
    this.errorMetadata = {};
    this.retryDelaySeconds = null;
    this.fieldViolations = [];
    const raw = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
    if (!raw.length) return;
    for (const any of Status.decode(raw[0]).details) {
      const type = DETAIL_TYPES[any.type_url];
      if (!type) continue;
      const detail = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
      if (detail.reason !== undefined) {
        this.reason = detail.reason;
        this.errorMetadata = detail.metadata || {};
      } else if (detail.retry_delay !== undefined) {
        this.retryDelaySeconds = (detail.retry_delay.seconds || 0) + (detail.retry_delay.nanos || 0) / 1e9;
      } else if (detail.field_violations !== undefined) {
        this.fieldViolations = detail.field_violations;
      }
    }
  }
}

function messagesOf(prompt, system) {
  const messages = system ? [{ role: 'ROLE_SYSTEM', content: system }] : [];
  if (typeof prompt === 'string') messages.push({ role: 'ROLE_USER', content: prompt });
  else messages.push(...prompt);
  return messages;
}

function pem(value) {
  return value === undefined || value === null ? null : Buffer.from(value);
}

/**
 * The channel credentials the options ask for: `credentials` as given; TLS when `tls` is true or a
 * `ca` (PEM, trusted instead of the system roots) is given, with `cert` and `key` (PEM) for mTLS;
 * plaintext otherwise.
 */
function credentialsOf(options) {
  if (options.credentials) return options.credentials;
  if (!options.tls && !options.ca && !options.cert && !options.key) return grpc.credentials.createInsecure();
  if (Boolean(options.cert) !== Boolean(options.key)) throw new TypeError('mTLS needs both cert and key');
  return grpc.credentials.createSsl(pem(options.ca), pem(options.key), pem(options.cert));
}

class LLMClient {
  /**
   * @param {string} target host:port of the gateway
   * @param {{sourceAgent?: string, sessionId?: string, timeoutMs?: number, token?: string, tls?: boolean,
   *   ca?: Buffer|string, cert?: Buffer|string, key?: Buffer|string, credentials?: grpc.ChannelCredentials}} [options]
   */
  constructor(target = 'localhost:50051', options = {}) {
    this.client = new LLMService(target, credentialsOf(options));
    this.sourceAgent = options.sourceAgent || '';
    this.sessionId = options.sessionId || '';
    this.token = options.token || '';
    this.timeoutMs = options.timeoutMs || 120000;
  }

  metadata(traceId) {
    const md = new grpc.Metadata();
    if (traceId) md.set('a2a-trace-id', traceId);
    if (this.sourceAgent) md.set('a2a-source-agent', this.sourceAgent);
    if (this.sessionId) md.set('a2a-session-id', this.sessionId);
    if (this.token) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  unary(method, request) {
    return new Promise((resolve, reject) => {
      this.client[method](request, this.metadata(), { deadline: this.deadline() }, (error, response) =>
        error ? reject(new LLMError(error)) : resolve(response),
      );
    });
  }

  deadline(timeoutMs) {
    return new Date(Date.now() + (timeoutMs || this.timeoutMs));
  }

  request(prompt, options = {}) {
    const request = {
      model: options.model || '',
      messages: messagesOf(prompt, options.system),
      stop: options.stop || [],
      tools: options.tools || [],
    };
    for (const key of [
      'temperature', 'max_tokens', 'top_p', 'tier', 'complexity', 'parallel_tool_calls', 'response_format',
      'reasoning', 'seed', 'user',
    ]) {
      if (options[key] !== undefined) request[key] = options[key];
    }
    if (options.tool_choice !== undefined) request.tool_choice = toolChoice(options.tool_choice);
    return request;
  }

  /** One whole completion. Rejects with LLMError. */
  complete(prompt, options = {}) {
    return new Promise((resolve, reject) => {
      this.client.Complete(
        this.request(prompt, options),
        this.metadata(options.traceId),
        { deadline: this.deadline(options.timeoutMs) },
        (error, response) => (error ? reject(new LLMError(error)) : resolve(response)),
      );
    });
  }

  /**
   * Text deltas as they arrive. The returned object is an async iterator of strings; after it ends,
   * `done` holds usage, finish reason, latency, provider, model and the assembled tool calls, and
   * `text` the whole text. `events()` iterates every event instead (delta, tool_call,
   * reasoning_delta, done).
   */
  stream(prompt, options = {}) {
    const call = this.client.Stream(this.request(prompt, options), this.metadata(options.traceId), {
      deadline: this.deadline(options.timeoutMs),
    });
    const result = {
      done: null,
      text: '',
      cancel: () => call.cancel(),
      async *events() {
        try {
          for await (const event of call) {
            if (event.event === 'done') result.done = event.done;
            else if (event.event === 'delta') result.text += event.delta;
            yield event;
          }
        } catch (error) {
          throw new LLMError(error);
        }
      },
      async *[Symbol.asyncIterator]() {
        for await (const event of result.events()) {
          if (event.event === 'delta') yield event.delta;
        }
      },
    };
    return result;
  }

  listModels() {
    return this.unary('ListModels', {});
  }

  checkHealth() {
    return this.unary('CheckHealth', {});
  }

  /**
   * The cheapest allowed model of a tier ('TIER_FAST', 'TIER_BALANCED', 'TIER_PREMIUM') or for a task
   * complexity ('COMPLEXITY_SIMPLE', ...); the tier wins when both are given.
   */
  selectModel(options = {}) {
    return this.unary('SelectModel', { tier: options.tier || 'TIER_UNSPECIFIED', complexity: options.complexity || 'COMPLEXITY_UNSPECIFIED' });
  }

  /** The gateway's totals since start (int64 counts as numbers). */
  getMetrics() {
    return this.unary('GetMetrics', {});
  }

  /** This caller's rate limits and budgets (for `model`, or all). */
  getQuota(model = '') {
    return this.unary('GetQuota', { model });
  }

  close() {
    this.client.close();
  }
}

const TOOL_CHOICE_MODES = {
  auto: 'TOOL_CHOICE_MODE_AUTO', none: 'TOOL_CHOICE_MODE_NONE', required: 'TOOL_CHOICE_MODE_REQUIRED',
};

/** 'auto' | 'none' | 'required' | a tool's name (that tool must be called) | a ToolChoice object. */
function toolChoice(choice) {
  if (typeof choice !== 'string') return choice;
  if (TOOL_CHOICE_MODES[choice]) return { mode: TOOL_CHOICE_MODES[choice] };
  return { mode: 'TOOL_CHOICE_MODE_REQUIRED', tool_name: choice };
}

/** A tool the model may call; `parameters` is the JSON Schema of its arguments. */
function tool(name, description = '', parameters = undefined) {
  return { name, description, parameters_json: parameters === undefined ? '' : JSON.stringify(parameters) };
}

/** A tool call's arguments, parsed. */
function toolArguments(call) {
  return call.arguments_json ? JSON.parse(call.arguments_json) : {};
}

/** The ROLE_TOOL message answering a call; a non-string result is sent as JSON. */
function toolResult(callId, result) {
  return { role: 'ROLE_TOOL', tool_call_id: callId, content: typeof result === 'string' ? result : JSON.stringify(result) };
}

/**
 * The assistant message to send back after a response: its text, tool calls and reasoning (with the
 * provider's signatures). For a stream, pass `done` and the stream's `text`.
 */
function assistantTurn(response, content = undefined) {
  return {
    role: 'ROLE_ASSISTANT',
    content: content !== undefined ? content : response.content || '',
    tool_calls: response.tool_calls || [],
    reasoning: response.reasoning || [],
  };
}

/** An image part: a Buffer with its media type, or an https:// URL. */
function image(source, mimeType = '') {
  if (typeof source === 'string') return { image: { url: source, mime_type: mimeType } };
  return { image: { data: source, mime_type: mimeType } };
}

/** A document (PDF) part from a Buffer. */
function documentPart(data, mimeType = 'application/pdf', title = '') {
  return { document: { data, mime_type: mimeType, title } };
}

/** A user message of text and parts. */
function user(content, ...parts) {
  return { role: 'ROLE_USER', content, parts };
}

/** Ask for JSON matching `schema`; the response's `structured_output` says whether it does. */
function jsonSchema(schema, name = 'response', strict = false) {
  return { type: 'RESPONSE_FORMAT_TYPE_JSON_SCHEMA', name, schema_json: JSON.stringify(schema), strict };
}

/** Reasoning control: 'low' | 'medium' | 'high', or { budgetTokens }. */
function reasoning(control) {
  if (typeof control === 'string') return { effort: `REASONING_EFFORT_${control.toUpperCase()}` };
  return { budget_tokens: control.budgetTokens };
}

module.exports = {
  LLMClient, LLMError, tool, toolChoice, toolArguments, toolResult, assistantTurn, image,
  document: documentPart, user, jsonSchema, reasoning,
};
