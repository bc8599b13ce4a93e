#!/usr/bin/env bash
# Generate Go code from the contract, build clients/go in GOPATH mode with Debian's packages
# (golang-go, golang-google-grpc-dev, protoc-gen-go, protoc-gen-go-grpc: no Go module proxy), then run
# it against a real demo gateway and check the streamed reply.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
gateway=""
cleanup() { [ -n "$gateway" ] && kill "$gateway" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/src/example.com/llm/v1" "$work/src/example.com/llmclient"
map="Mllm_grpc/v1/llm.proto=example.com/llm/v1"
protoc -I"$root/protos" --go_out="$work/src/example.com/llm/v1" --go_opt="paths=source_relative,$map" \
  --go-grpc_out="$work/src/example.com/llm/v1" --go-grpc_opt="paths=source_relative,$map" \
  "$root/protos/llm_grpc/v1/llm.proto"
mv "$work/src/example.com/llm/v1/llm_grpc/v1/"*.go "$work/src/example.com/llm/v1/"
cp "$here/main.go" "$work/src/example.com/llmclient/"
(cd "$work/src/example.com/llmclient" && GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOPROXY=off \
  GOCACHE="$work/cache" go build -o "$work/llm-go-client" .)
echo "go client builds"

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cd "$root"
"$python" -m server serve --demo --port "$port" --metrics-port -1 >/dev/null 2>&1 &
gateway=$!
for _ in $(seq 100); do
  "$python" -m server health --target "127.0.0.1:$port" >/dev/null 2>&1 && break
  sleep 0.2
done
output=$("$work/llm-go-client" "127.0.0.1:$port")
echo "$output"
grep -q "emulator reply: Hello from Go" <<<"$output"
grep -q "\[openai/gpt-5.4-mini\]" <<<"$output"
echo "go client streams from the gateway"
