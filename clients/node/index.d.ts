// Types for the llm-grpc Node.js client (field names as in the proto: snake_case; enums as strings).
import type { ChannelCredentials } from '@grpc/grpc-js';

export type Role = 'ROLE_SYSTEM' | 'ROLE_USER' | 'ROLE_ASSISTANT' | 'ROLE_TOOL';

/** One piece of a message's content: set exactly one of the fields. */
export interface ContentPart {
  text?: string;
  /** An image, inline (`data` + `mime_type`: image/png, image/jpeg, image/gif, image/webp) or by https URL. */
  image?: { data?: Buffer | Uint8Array; url?: string; mime_type?: string };
  /** A PDF, inline. */
  document?: { data: Buffer | Uint8Array; mime_type?: string; title?: string };
}

/** The model's call of one tool. Send it back unchanged in the assistant message. */
export interface ToolCall {
  id: string;
  name: string;
  /** The arguments as JSON text. */
  arguments_json: string;
  /** Opaque provider state (Gemini thought signature). */
  signature?: Buffer | Uint8Array;
  /** The provider's id of the item that carried the call (OpenAI Responses `fc_…`); send it back. */
  item_id?: string;
}

/** A stream fragment of a tool call: the first of a call (by index) has id and name. */
export interface ToolCallDelta { index: number; id: string; name: string; arguments_delta: string }

/** A piece of reasoning and its provider's opaque state; send it back unchanged. */
export interface ReasoningPart {
  text?: string;
  signature?: Buffer | Uint8Array;
  redacted_data?: Buffer | Uint8Array;
  provider?: string;
  /** The provider's id of the reasoning item (OpenAI Responses `rs_…`). */
  id?: string;
}

export interface Message {
  role: Role;
  content?: string;
  parts?: ContentPart[];
  /** ROLE_ASSISTANT: the tools the model called. */
  tool_calls?: ToolCall[];
  /** ROLE_TOOL: the id of the call this result answers. */
  tool_call_id?: string;
  /** ROLE_ASSISTANT: the reasoning a response returned. */
  reasoning?: ReasoningPart[];
  /** Cache the prompt up to the end of this message (Anthropic); others cache automatically. */
  cache_breakpoint?: boolean;
}

export interface Tool {
  name: string;
  description?: string;
  /** The JSON Schema of the arguments, as JSON text. */
  parameters_json?: string;
}

export type ToolChoiceMode =
  | 'TOOL_CHOICE_MODE_UNSPECIFIED' | 'TOOL_CHOICE_MODE_AUTO' | 'TOOL_CHOICE_MODE_NONE' | 'TOOL_CHOICE_MODE_REQUIRED';
export interface ToolChoice { mode?: ToolChoiceMode; tool_name?: string }

export interface ResponseFormat {
  type: 'RESPONSE_FORMAT_TYPE_TEXT' | 'RESPONSE_FORMAT_TYPE_JSON_OBJECT' | 'RESPONSE_FORMAT_TYPE_JSON_SCHEMA';
  name?: string;
  schema_json?: string;
  strict?: boolean;
}

export type ReasoningEffort = 'REASONING_EFFORT_LOW' | 'REASONING_EFFORT_MEDIUM' | 'REASONING_EFFORT_HIGH';
export type Reasoning = { effort: ReasoningEffort } | { budget_tokens: number };

/** The gateway's check of a JSON answer against the request's response format. */
export interface StructuredOutput { valid: boolean; error: string }

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  usage_estimated: boolean;
  /** Of prompt_tokens, read from the provider's prompt cache. */
  cached_input_tokens: number;
  /** Of prompt_tokens, written to the provider's prompt cache. */
  cache_write_tokens: number;
  /** Of completion_tokens, spent thinking. */
  reasoning_tokens: number;
}
export type FinishReason =
  | 'FINISH_REASON_UNSPECIFIED' | 'FINISH_REASON_STOP' | 'FINISH_REASON_LENGTH'
  | 'FINISH_REASON_CONTENT_FILTER' | 'FINISH_REASON_TOOL_CALLS' | 'FINISH_REASON_OTHER';

export interface CallOptions {
  model?: string;
  system?: string;
  temperature?: number;
  max_tokens?: number;
  top_p?: number;
  stop?: string[];
  tier?: Tier;
  complexity?: Complexity;
  tools?: Tool[];
  /** 'auto' | 'none' | 'required' | a tool's name | a ToolChoice. */
  tool_choice?: 'auto' | 'none' | 'required' | string | ToolChoice;
  parallel_tool_calls?: boolean;
  response_format?: ResponseFormat;
  reasoning?: Reasoning;
  seed?: number;
  /** An opaque id of the end user, forwarded to providers that take one. */
  user?: string;
  traceId?: string;
  timeoutMs?: number;
}

export interface CompleteResponse {
  content: string; usage: Usage; latency_ms: number; provider: string; model: string;
  trace_id: string; finish_reason: FinishReason; cost_usd: number; served_model: string;
  tool_calls: ToolCall[]; reasoning: ReasoningPart[]; structured_output: StructuredOutput | null;
  response_id: string;
}
export interface StreamDone {
  usage: Usage; finish_reason: FinishReason; latency_ms: number; time_to_first_token_ms: number;
  provider: string; model: string; trace_id: string; cost_usd: number; served_model: string;
  tool_calls: ToolCall[]; reasoning: ReasoningPart[]; structured_output: StructuredOutput | null;
  response_id: string;
}
export type StreamEvent =
  | { event: 'delta'; delta: string }
  | { event: 'tool_call'; tool_call: ToolCallDelta }
  | { event: 'reasoning_delta'; reasoning_delta: string }
  | { event: 'done'; done: StreamDone };
export interface TokenStream extends AsyncIterable<string> {
  done: StreamDone | null;
  /** The text delivered so far. */
  text: string;
  /** Every event: text, tool-call fragments, reasoning text, then done. */
  events(): AsyncIterable<StreamEvent>;
  cancel(): void;
}

export class LLMError extends Error {
  code: number;
  codeName: string;
  reason: string;
  errorMetadata: Record<string, string>;
  retryDelaySeconds: number | null;
  fieldViolations: { field: string; description: string }[];
}

export type Tier = 'TIER_FAST' | 'TIER_BALANCED' | 'TIER_PREMIUM';
export type Complexity = 'COMPLEXITY_SIMPLE' | 'COMPLEXITY_MODERATE' | 'COMPLEXITY_COMPLEX';

export interface ClientOptions {
  sourceAgent?: string;
  sessionId?: string;
  timeoutMs?: number;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** TLS with the system roots (implied by `ca`, `cert` or `key`). */
  tls?: boolean;
  /** PEM CA certificate(s) to trust instead of the system roots. */
  ca?: Buffer | string;
  /** PEM client certificate chain and private key, for mTLS (both or neither). */
  cert?: Buffer | string;
  key?: Buffer | string;
  /** Channel credentials built by the caller; wins over tls/ca/cert/key. */
  credentials?: ChannelCredentials;
}

export interface SelectModelResponse { model: string; provider: string; tier: Tier; reason: string }
export interface ProviderMetrics { provider: string; requests: number; tokens: number; errors: number; cost_usd: number }
export interface ModelMetrics { model: string; provider: string; requests: number; tokens: number; cost_usd: number }
export interface GetMetricsResponse {
  total_requests: number; total_tokens: number; mean_latency_ms: number; providers: ProviderMetrics[];
  governance_violations: number; total_cost_usd: number; models: ModelMetrics[];
}
export interface Quota {
  kind: string; scope: string; limit: number; used: number; remaining: number;
  reset_time: { seconds: number; nanos: number } | null;
}

export class LLMClient {
  constructor(target?: string, options?: ClientOptions);
  complete(prompt: string | Message[], options?: CallOptions): Promise<CompleteResponse>;
  stream(prompt: string | Message[], options?: CallOptions): TokenStream;
  listModels(): Promise<{ models: { id: string; provider: string }[]; default_model: string }>;
  checkHealth(): Promise<{ status: string; providers: { provider: string; status: string }[] }>;
  selectModel(options?: { tier?: Tier; complexity?: Complexity }): Promise<SelectModelResponse>;
  getMetrics(): Promise<GetMetricsResponse>;
  getQuota(model?: string): Promise<{ identity: string; quotas: Quota[] }>;
  close(): void;
}

export function tool(name: string, description?: string, parameters?: object): Tool;
export function toolChoice(choice: 'auto' | 'none' | 'required' | string | ToolChoice): ToolChoice;
export function toolArguments(call: ToolCall): any;
export function toolResult(callId: string, result: string | object): Message;
export function assistantTurn(response: CompleteResponse | StreamDone, content?: string): Message;
export function image(source: Buffer | Uint8Array | string, mimeType?: string): ContentPart;
export function document(data: Buffer | Uint8Array, mimeType?: string, title?: string): ContentPart;
export function user(content: string, ...parts: ContentPart[]): Message;
export function jsonSchema(schema: object, name?: string, strict?: boolean): ResponseFormat;
export function reasoning(control: 'low' | 'medium' | 'high' | { budgetTokens: number }): Reasoning;
