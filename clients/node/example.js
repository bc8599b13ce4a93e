'use strict';
// node example.js "Tell me a joke"  (with `make run` serving on localhost:50051)
const { LLMClient } = require('./index');

async function main() {
  const client = new LLMClient(process.env.LLM_GRPC_TARGET || 'localhost:50051', { sourceAgent: 'node-example' });
  const stream = client.stream(process.argv[2] || 'Hello from Node', { model: 'claude-haiku-4-5' });
  for await (const delta of stream) process.stdout.write(delta);
  const { usage, provider, model } = stream.done;
  console.error(`\n[${provider}/${model}] ${usage.total_tokens} tokens`);
  client.close();
}

main().catch((error) => {
  console.error(`${error.codeName || ''} ${error.message}`);
  process.exit(1);
});
