"""Cross-cutting leaves: logging (with redaction) and metrics. They import nothing of ours but core types."""
