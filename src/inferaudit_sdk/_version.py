"""The SDK's version, also the instrumentation scope version on every span and metric."""

VERSION = "0.1.0"
