"""The engine check's child: does this llama.cpp build decode this model on this CPU?

llama.cpp picks its kernels from the CPU's features and the weights' type, and some of them
crash in native code (its AMX kernels on Sapphire Rapids class Xeons, where GCC before 14 built
them: ``packaging/build_engine.py`` mends that in our build, not in other wheels). A crash
in a runner would take every request with it and restart in a loop, so before a runner serves,
the daemon (``daemon/engine_path.py``) runs this in a short-lived child, once per build, CPU
and quant type: load the model the way the runner will, decode a prompt, a step of it, then a
batch of several sequences, and check the logits are numbers (``_decode_shapes`` says why
these). The first runner for a key with no verdict runs the same decodes itself, on its own
batching context (``check_context``, a trial path), and children check only after such a
runner crashed.

    python -m localserve.runner.engine_check    # reads one JSON plan line on stdin

It writes JSON lines on stdout: ``variants`` (a portable build's CPU variants and their scores,
before anything can crash), then ``ok`` (the devices used, and the text of ``generate`` greedy
tokens) or ``failed`` (a load error: a bad file, not a crash). Dying of a signal is the answer
the daemon looks for.

``LOCALSERVE_ENGINE_CHECK_CRASH``, read here and nowhere else, makes this child die of SIGSEGV
at its first decode, as llama.cpp's AMX kernels do, so the fallback can be tested on any CPU:
``extra_buffers`` (when they are on), ``variant:NAME`` (with that CPU variant) or ``always``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any

from localserve.program import lean_start_environment

CRASH_ENV = "LOCALSERVE_ENGINE_CHECK_CRASH"
EVENT_VARIANTS = "variants"
EVENT_OK = "ok"
EVENT_FAILED = "failed"
EXIT_FAILED = 3

CHECK_CTX_PER_SEQUENCE = 128
CHECK_SEQUENCES = 4
MIXED_PROMPT_TOKENS = 2  # of each of the three prompts decoded together
PROMPT = "The capital of France is"


@dataclass(frozen=True)
class CheckPlan:
    model_path: str
    cpu_variant: str | None  # a portable build's variant; "best" = the top score; None: native
    extra_buffers: bool
    gpu_layers: int  # llama.cpp's n_gpu_layers, resolved (-1 = all)
    threads: int = 2
    generate: int = 0  # greedy tokens to write back (the packaging test reads them)

    def to_line(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _crash_if_asked(extra_buffers: bool, variant: str | None) -> None:
    """The test seam: die here, before the first decode, as the AMX kernels do inside it."""
    wanted = {part.strip() for part in os.environ.get(CRASH_ENV, "").split(",") if part.strip()}
    if (
        "always" in wanted
        or (extra_buffers and "extra_buffers" in wanted)
        or (variant is not None and f"variant:{variant}" in wanted)
    ):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)


class _Decoder:
    """Just enough of llama.cpp's low-level API to decode batches of several sequences, on a
    context of its own (``small``) or on a runner's batching context."""

    def __init__(self, model: Any, ctx: Any, batch: Any, owned: bool) -> None:
        import llama_cpp

        self.api = llama_cpp
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.ctx = ctx
        self.batch = batch
        self.sequences = min(CHECK_SEQUENCES, int(llama_cpp.llama_n_seq_max(ctx)))
        self._owned = owned

    @classmethod
    def small(cls, model: Any, threads: int) -> _Decoder:
        """A context just large enough for the check's decodes (the check child's)."""
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = CHECK_CTX_PER_SEQUENCE * CHECK_SEQUENCES
        params.n_batch = params.n_ubatch = CHECK_CTX_PER_SEQUENCE
        params.n_seq_max = CHECK_SEQUENCES
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # as the runner's scheduler with batch_exact: comparable
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create a context")
        return cls(model, ctx, llama_cpp.llama_batch_init(CHECK_CTX_PER_SEQUENCE, 0, 1), True)

    def close(self) -> None:
        if self._owned:  # a runner's context is its scheduler's to clear
            self.api.llama_batch_free(self.batch)
            self.api.llama_free(self.ctx)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (self.api.llama_token * (len(data) + 8))()
        count = self.api.llama_tokenize(
            self.vocab, data, len(data), buffer, len(buffer), True, False
        )
        return list(buffer[: max(0, count)])

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> list[Any]:
        """Decode (token, position, sequence, wants logits) rows in one batch; the logits of
        the rows that want them, as numpy arrays (read element by element through ctypes,
        49,152 of them per row took most of the check's time)."""
        import numpy  # loaded with llama_cpp already

        batch = self.batch
        outputs = []
        for index, (token, pos, seq, wants_logits) in enumerate(rows):
            batch.token[index] = token
            batch.pos[index] = pos
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = seq
            batch.logits[index] = wants_logits
            if wants_logits:
                outputs.append(index)
        batch.n_tokens = len(rows)
        status = self.api.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        return [
            numpy.ctypeslib.as_array(
                self.api.llama_get_logits_ith(self.ctx, index), shape=(self.n_vocab,)
            ).copy()
            for index in outputs
        ]


def _greedy(logits: Any) -> int:
    import numpy

    if not numpy.isfinite(logits).all():
        raise RuntimeError("llama.cpp computed logits that are not numbers")
    return int(logits.argmax())


def run_check(plan: CheckPlan) -> dict[str, Any]:
    """Load and decode as described above; the facts for the ``ok`` line."""
    from localserve.runner import llama_backends

    variant = plan.cpu_variant
    if llama_backends.is_portable_build():
        scores = llama_backends.variant_scores()
        ranked = llama_backends.ranked_variants(scores)
        _emit(EVENT_VARIANTS, scores=scores, ranked=ranked)
        if variant in (None, "best"):
            variant = llama_backends.best_variant(ranked)
        elif scores.get(variant) == 0:
            raise llama_backends.BackendLoadError(
                f"The {variant} CPU kernels need instructions this CPU lacks; it can run "
                f"{', '.join(ranked) or 'none of them'}."
            )
    elif variant is not None:
        variant = None  # a native build has one CPU backend, built in
    llama_backends.load_backends(variant)

    import llama_cpp

    llama_backends.log_from_c()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = plan.gpu_layers
    params.use_extra_bufts = plan.extra_buffers
    model = llama_cpp.llama_model_load_from_file(plan.model_path.encode(), params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {plan.model_path}")
    generated = check_decodes(model, plan.threads, plan.extra_buffers, variant, plan.generate)
    vocab = llama_cpp.llama_model_get_vocab(model)
    text = b"".join(_piece(vocab, token) for token in generated[: plan.generate])
    return {
        "cpu_variant": variant,
        "extra_buffers": plan.extra_buffers,
        "devices": [asdict(device) for device in llama_backends.devices()],
        "text": text.decode("utf-8", errors="replace"),
    }


def check_decodes(
    model: Any, threads: int, extra_buffers: bool, variant: str | None, generate: int = 0
) -> list[int]:
    """The check's decodes on a loaded llama.cpp model (the pointer), in a small context of
    their own (the check child's): the greedy tokens of sequence 0."""
    return _decode_shapes(_Decoder.small(model, threads), extra_buffers, variant, generate)


def check_context(
    model: Any, ctx: Any, batch: Any, extra_buffers: bool, variant: str | None
) -> None:
    """The same decodes on a runner's own batching context and batch, before it serves (a
    trial path, ``EnginePath.trial``): the context the requests will use, with its flash
    attention, KV-cache types and sequences, and no second context to make. The cells it fills
    are the caller's to clear (``Scheduler.check_before_serving``)."""
    _decode_shapes(_Decoder(model, ctx, batch, owned=False), extra_buffers, variant, 0)


def _decode_shapes(
    decoder: _Decoder, extra_buffers: bool, variant: str | None, generate: int
) -> list[int]:
    """Decode the shapes below and check their logits are numbers: the greedy tokens of
    sequence 0. RuntimeError when a decode fails or its logits are not numbers; a crash is what
    the caller's parent watches for.

    llama.cpp's CPU kernels choose their code by the number of rows in a batch: AMX uses its
    VNNI kernel for one row and its tiles for two or more; repacked weights use gemv below four
    rows and gemm (plus gemv for the rest) from four. So, asking for logits where the batch loop
    does: a prompt on one sequence (five words: four rows or more in any real vocabulary), one
    step of it alone (one row), then a batch mixing a step of it with the starts of three more
    prompts (several sequences)."""
    try:
        prompt = decoder.tokenize(PROMPT) or [0]
        _crash_if_asked(extra_buffers, variant)
        last = len(prompt) - 1
        first = decoder.decode([(token, pos, 0, pos == last) for pos, token in enumerate(prompt)])
        generated = [_greedy(first[0])]
        position = len(prompt)
        (step,) = decoder.decode([(generated[-1], position, 0, True)])
        generated.append(_greedy(step))
        position += 1
        started = prompt[:MIXED_PROMPT_TOKENS]
        others = range(1, decoder.sequences)
        mixed = [(generated[-1], position, 0, True)] + [
            (token, pos, seq, pos == len(started) - 1)
            for seq in others
            for pos, token in enumerate(started)
        ]
        tokens = [_greedy(logits) for logits in decoder.decode(mixed)]
        generated.append(tokens[0])
        positions = [position + 1] + [len(started)] * len(others)
        while len(generated) < generate:  # the same shape again tests nothing new
            rows = [(tokens[seq], positions[seq], seq, True) for seq in range(len(tokens))]
            tokens = [_greedy(logits) for logits in decoder.decode(rows)]
            positions = [pos + 1 for pos in positions]
            generated.append(tokens[0])
        return generated
    finally:
        decoder.close()


def _piece(vocab: Any, token: int) -> bytes:
    import llama_cpp

    buffer = (ctypes.c_char * 64)()
    count = llama_cpp.llama_token_to_piece(vocab, token, buffer, 64, 0, False)
    return buffer.raw[: max(0, count)]


def main() -> int:
    gc.disable()  # a short life, spent importing and decoding: the cyclic collector finds nothing
    lean_start_environment()
    plan = CheckPlan(**json.loads(sys.stdin.buffer.readline()))
    try:
        facts = run_check(plan)
    except Exception as exc:  # a load error: the file or the build, not a crash
        _emit(EVENT_FAILED, message=str(exc))
        return EXIT_FAILED
    _emit(EVENT_OK, **facts)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip teardown: freeing llama.cpp's state is the OS's job here
