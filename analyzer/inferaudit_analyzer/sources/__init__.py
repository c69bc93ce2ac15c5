"""Where exported spans are fetched from before the normal file ingest (object storage)."""
