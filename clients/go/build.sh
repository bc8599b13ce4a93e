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

cd "$root"
# The gateway picks a free port (--port 0) and names it in its JSON `serving` log line; wait for that
# line (tail exits with the gateway, so a failed start ends the wait too).
LLM_LOG_FORMAT=json "$python" -m server serve --demo --port 0 --metrics-port -1 2>"$work/gateway.log" &
gateway=$!
serving=$(tail -n +1 --pid="$gateway" -f "$work/gateway.log" | grep -m1 '"event": "serving"' || true)
[ -n "$serving" ] || { echo "the gateway did not start:"; cat "$work/gateway.log"; exit 1; }
address=$("$python" -c 'import json, sys; print(json.loads(sys.argv[1])["address"])' "$serving")
output=$("$work/llm-go-client" "$address")
echo "$output"
grep -q "emulator reply: Hello from Go" <<<"$output"
grep -q "\[openai/gpt-5.4-mini\]" <<<"$output"
echo "go client streams from the gateway"
