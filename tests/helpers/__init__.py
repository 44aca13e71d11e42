"""What the tests and the benchmarks share: a real daemon in a subprocess (``daemon_process``),
one with models imported first (``imported_models``), the tray as the app makes it (``tray``),
the in-process gateway over a fake backend (``gateway``, ``fake_backend``), the fakes of what
cannot exist here (the Hugging Face Hub, ``fake_hub``; cloud providers, ``fake_cloud``; a system
keyring, ``fake_keyring``; their HTTP plumbing, ``fake_http``), GGUF files made to measure
(``model_files``) and log sinks."""
