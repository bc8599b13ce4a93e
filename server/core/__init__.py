"""The gateway's core: its own small types, errors and the facade. Knows no gRPC and no SDK."""
