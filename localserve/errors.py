"""The exceptions localserve raises, in one place.

    LocalserveError                 base of everything below; ``str(err)`` is one readable line
    ├── ConfigError                 a setting or option has a value we cannot use
    ├── KeyStoreError               the admin key or client keys cannot be read or written
    ├── DaemonNotRunningError       a client command found no daemon to talk to
    ├── ModelNotFoundError          a model name or path that does not exist
    ├── ModelInUseError             a model that cannot be removed while it is being served
    ├── ModelLoadError              a model file that cannot be loaded (corrupt, not GGUF, OOM)
    │   └── ModelTooLargeError      the fit estimate says it does not fit in free memory now
    ├── InvalidModelFileError       a file whose GGUF header is missing, truncated or absurd
    ├── HubError                    the Hugging Face Hub refused or could not be reached
    │   ├── RepoNotFoundError       no such repo, or no such file in it (or no access)
    │   ├── HubAccessError          a gated or private repo, or a token the Hub refuses
    │   └── HubUnreachableError     a network fault on the way (``fault`` says which)
    ├── DownloadError               a download that failed (bad checksum, connection lost)
    │   └── DiskSpaceError          not enough free disk for the download
    ├── ForwardingRefusedError      a request would go to a cloud provider, and that is not allowed
    ├── BackendUnavailableError     the backend for a model died or is restarting
    │   ├── BackendTimeoutError     the backend stopped sending within the request timeout
    │   └── UpstreamError           a cloud provider cannot be reached, fails, or answers a
    │                               web page (``fault`` says which when it is the network)
    └── InvalidRequestError         a request the model cannot serve as asked
        ├── ContextOverflowError    prompt + max_tokens do not fit in the context window
        ├── UnsupportedFeatureError the model lacks what the request needs (e.g. FIM tokens)
        └── ImageRejectedError      an image or image URL we refuse to fetch or decode
                                    (``code`` says why: ``ImageRejection``)

Each edge translates them: HTTP into OpenAI's error JSON (``server/errors.py``), the CLI into one
line on stderr (``cli.py``). Code never matches on message strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from localserve.network import NetworkFault


class LocalserveError(Exception):
    """Base class; the message is meant for the user and fits on one line."""


class ConfigError(LocalserveError):
    pass


class KeyStoreError(LocalserveError):
    pass


class DaemonNotRunningError(LocalserveError):
    pass


class ModelNotFoundError(LocalserveError):
    def __init__(self, model: str, available: list[str] | None = None, hint: str = "") -> None:
        self.model = model
        self.available = available or []
        listing = f" Available: {', '.join(self.available)}." if self.available else ""
        super().__init__(
            f"The model '{model}' does not exist.{listing}{' ' + hint if hint else ''}"
        )


class ModelInUseError(LocalserveError):
    pass


class ModelLoadError(LocalserveError):
    pass


class ModelTooLargeError(ModelLoadError):
    pass


class InvalidModelFileError(LocalserveError):
    pass


class HubError(LocalserveError):
    pass


class RepoNotFoundError(HubError):
    pass


class HubAccessError(HubError):
    pass


class HubUnreachableError(HubError):
    def __init__(self, message: str, fault: NetworkFault) -> None:
        self.fault = fault
        super().__init__(message)


class DownloadError(LocalserveError):
    pass


class DiskSpaceError(DownloadError):
    pass


class BackendUnavailableError(LocalserveError):
    pass


class QueueFullError(LocalserveError):
    """Too many requests wait for a model already: answered with 429 and Retry-After."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class BackendTimeoutError(BackendUnavailableError):
    pass


class UpstreamError(BackendUnavailableError):
    def __init__(self, message: str, fault: NetworkFault | None = None) -> None:
        self.fault = fault
        super().__init__(message)


class ForwardingRefusedError(LocalserveError):
    pass


class InvalidRequestError(LocalserveError):
    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class ContextOverflowError(InvalidRequestError):
    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length
        super().__init__(
            f"This model's maximum context length is {context_length} tokens, but the request "
            f"needs {prompt_tokens + max_tokens} ({prompt_tokens} in the prompt + {max_tokens} "
            "for max_tokens). Shorten the prompt or lower max_tokens.",
            param="messages",
        )


class UnsupportedFeatureError(InvalidRequestError):
    def __init__(
        self, message: str, param: str | None = None, code: str = "unsupported_feature"
    ) -> None:
        self.code = code
        super().__init__(message, param)


ImageRejection = Literal[
    "invalid_image",  # not a PNG, JPEG, WebP or GIF, corrupt, truncated, or not image/* data
    "image_too_large",  # over the byte or pixel limit (decompression bombs land here)
    "invalid_image_url",  # empty, malformed, relative, or without a host
    "image_url_forbidden",  # a scheme other than data: and http(s), or a private address
    "image_fetch_failed",  # the http(s) fetch failed: DNS, connection, status, time, redirects
]


class ImageRejectedError(InvalidRequestError):
    """An untrusted image refused by ``localserve.media``; a 400 at every edge, ``code`` for
    the API's error code."""

    def __init__(self, message: str, code: ImageRejection, param: str | None = None) -> None:
        self.code = code
        super().__init__(message, param)
