"""llm-grpc: one gRPC gateway to OpenAI, Anthropic and Google Gemini."""
