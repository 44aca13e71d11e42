"""Cloud providers (OpenAI-compatible APIs), their keys, mappings and usage ledger."""
