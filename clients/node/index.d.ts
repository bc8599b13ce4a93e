// Types for the llm-grpc Node.js client.
import type { ChannelCredentials } from '@grpc/grpc-js';

export type Role = 'ROLE_SYSTEM' | 'ROLE_USER' | 'ROLE_ASSISTANT';
export interface Message { role: Role; content: string }
export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }
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
  traceId?: string;
  timeoutMs?: number;
}

export interface CompleteResponse {
  content: string; usage: Usage; latency_ms: number; provider: string; model: string;
  trace_id: string; finish_reason: FinishReason; cost_usd: number;
}
export interface StreamDone {
  usage: Usage; finish_reason: FinishReason; latency_ms: number; time_to_first_token_ms: number;
  provider: string; model: string; trace_id: string; cost_usd: number;
}
export interface TokenStream extends AsyncIterable<string> { done: StreamDone | null; cancel(): void }

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
