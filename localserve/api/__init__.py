"""The typed wire contract every layer shares, importing none of them.

- ``requests``: the OpenAI-shaped requests every backend takes (the gateway validates them,
  the runner serves them);
- ``sampling``: sampling parameters as the engine takes them;
- ``engine``: the engine settings, from ``config.toml`` to the runner's scheduler;
- ``runner``: the handshake and configuration between the daemon and a runner process;
- ``control``: every answer of the control API (status, stats, models, Hub, pulls), which the
  daemon returns and its CLI and tray read;
- ``errors``: core exceptions as HTTP errors (status, type, code) and OpenAI's error body;
- ``sse``: server-sent event framing;
- ``ids``: identifiers made for the wire (tool-call ids);
- ``keep_alive``: a request's ``keep_alive`` field in seconds.
"""
