"""The gRPC edge: protobuf ⇄ core types, metadata ⇄ RequestContext, core errors → gRPC status."""
