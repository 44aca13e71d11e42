"""localserve: serve local LLMs as an authenticated, OpenAI-compatible API."""

__version__ = "0.1.0"
