"""InferAudit SDK: OpenTelemetry-native instrumentation of AI inference (placeholder, being written)."""
