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
  tier?: 'TIER_FAST' | 'TIER_BALANCED' | 'TIER_PREMIUM';
  complexity?: 'COMPLEXITY_SIMPLE' | 'COMPLEXITY_MODERATE' | 'COMPLEXITY_COMPLEX';
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

export class LLMClient {
  constructor(target?: string, options?: {
    sourceAgent?: string; sessionId?: string; timeoutMs?: number; credentials?: ChannelCredentials;
  });
  complete(prompt: string | Message[], options?: CallOptions): Promise<CompleteResponse>;
  stream(prompt: string | Message[], options?: CallOptions): TokenStream;
  listModels(): Promise<{ models: { id: string; provider: string }[]; default_model: string }>;
  checkHealth(): Promise<{ status: string; providers: { provider: string; status: string }[] }>;
  close(): void;
}
