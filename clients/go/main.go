// A Go client for llm.v1.LLMService: streams a completion and prints its tokens as they arrive.
// Built by `make go-check` (GOPATH mode, with Debian's grpc-go) to keep clients/README.md's snippet honest.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	llmv1 "example.com/llm/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	target := "localhost:50051"
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	conn, err := grpc.Dial(target, grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := llmv1.NewLLMServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "a2a-source-agent", "go-agent")
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := client.Stream(ctx, &llmv1.StreamRequest{
		Model:    "gpt-5.4-mini",
		Messages: []*llmv1.Message{{Role: llmv1.Role_ROLE_USER, Content: "Hello from Go"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	for {
		event, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(status.Convert(err).Details()) // ErrorInfo, RetryInfo, BadRequest
		}
		switch e := event.Event.(type) {
		case *llmv1.StreamResponse_Delta:
			fmt.Print(e.Delta)
		case *llmv1.StreamResponse_Done:
			fmt.Printf("\n[%s/%s] %d tokens\n", e.Done.Provider, e.Done.Model, e.Done.Usage.TotalTokens)
		}
	}
}
