"""Each protocol we speak, as pure translators between its wire format and OpenAI's (the format
every backend takes): no HTTP and no FastAPI inside, so they are tested in milliseconds."""
