"""InferAudit SDK (being written)."""
