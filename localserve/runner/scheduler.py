"""Continuous batching: every step decodes one token of every generating sequence in a single
``llama_decode``, and fills the rest of the step with chunks of prompts that are joining.

Each request gets a *slot* (a llama.cpp sequence id) in one shared context. A slot keeps the
tokens of its last request in the KV cache after it ends: a new prompt that starts with them
(a chat's history, an editor's file context) reuses those cells, from its own slot or copied
from another (``llama_memory_seq_cp``), and only the rest is prefilled. Free slots are taken
least-recently-used first, which is the eviction policy for idle prefixes. Requests beyond the
slots wait in a FIFO queue. The whole loop runs on one thread: llama.cpp contexts are not
thread-safe, and the event loop only ever calls ``submit``.

A request may ask for speculative decoding by prompt lookup: its next token goes into the step
with a few drafted tokens behind it, the model's samples at those rows are compared with the
drafts, and the cells of rejected drafts are removed. Samples are drawn one by one through the
sequence's own sampler, so penalties, grammar and seed see exactly the accepted history. A
greedy request with neutral penalties and no grammar has no sampler: its token is the argmax of
its logits row, read in numpy through a view kept per row address (50 us right after a decode,
against 90 us for a view made per token and 250 us for llama.cpp's greedy sampler, which first
copies the 49,152 logits of the starter's vocabulary into candidates; the same token, the first
of equal maxima). Each token's text is kept once detokenized: a decode evicts the interpreter's
data from the caches, so every call after it is about seven times slower than in a warm loop.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp
import numpy
from llama_cpp import _internals

from localserve.api.engine import EngineSettings
from localserve.api.runner import BATCH_TOKENS
from localserve.api.sampling import SamplingParams
from localserve.runner.commands import ThreadShare
from localserve.runner.kv import GROWTH_RESERVE, SharedCells, Slot
from localserve.runner.llama_backends import logits_address
from localserve.runner.lookup import DraftControl, PromptLookup
from localserve.runner.reasoning import ThoughtPlan, ThoughtWatch
from localserve.runner.reporting import ThroughputMeter
from localserve.runner.text import GenerationStats, TextAssembler
from localserve.runner.vision import ImagePrompt, Projector

log = logging.getLogger("localserve.runner")

PENALTY_LAST_N = 64  # as llama-cpp-python's Llama does
FLASH_ATTENTION = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,  # llama.cpp decides per device, as llama-server
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}
GGML_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}
# Drafted rows per step, shared by the generating sequences: with several streams the batch is
# already full of useful work, and a rejected draft would slow all of them.
DRAFT_ROW_BUDGET = 8


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: list[int]
    max_tokens: int
    grammar: Any  # llama_cpp.llama_grammar.LlamaGrammar | None
    params: SamplingParams
    prompt_lookup: bool = False
    thought: ThoughtPlan | None = None  # a thinking model's thought: watched, kept to budget
    images: ImagePrompt | None = None  # the prompt's images (placeholders in prompt_tokens)


class Sink(Protocol):
    """Where a sequence's output goes; implemented by the runner's job objects."""

    cancelled: threading.Event
    stats: GenerationStats

    def emit(self, text: str) -> None: ...

    def close(self, error: BaseException | None = None) -> None: ...


@dataclass
class Sequence:
    slot: Slot
    request: GenerationRequest
    sink: Sink
    sampler: _internals.LlamaSampler | None  # None: plain greedy (the argmax of the logits)
    text: TextAssembler
    prefilled: int  # prompt tokens already in the KV cache
    next_token: int | None = None  # sampled, to be decoded in the next step
    sample_rows: list[int] = field(default_factory=list)  # this step's rows to sample from
    drafts: list[int] = field(default_factory=list)  # this step's drafted tokens
    lookup: PromptLookup | None = None  # set when the request speculates
    control: DraftControl = field(default_factory=DraftControl)
    watch: ThoughtWatch | None = None  # set when the model may think
    forced: deque[int] = field(default_factory=deque)  # written in place of samples
    history: list[int] | None = None  # after a preemption: every token so far, to prefill again

    @property
    def prompt(self) -> list[int]:
        """The tokens to have in the KV cache before the next sample."""
        return self.history if self.history is not None else self.request.prompt_tokens

    @property
    def generating(self) -> bool:
        return self.next_token is not None


def flash_attention(settings: EngineSettings) -> str:
    """The flash-attention choice for the batching context. With ``batch_exact``, 'auto' is
    off (unless a quantized V cache needs it): its kernels' sums depend on how many cells a
    stream spans, so a prefix copied from another slot answered differently from a cold run."""
    exact_off = settings.batch_exact and settings.cache_type_v == "f16"
    if settings.flash_attention == "auto" and exact_off:
        return "off"
    return settings.flash_attention


def plain_greedy(params: SamplingParams) -> bool:
    """Greedy sampling whose penalties change nothing: the argmax of the logits."""
    return (
        params.temperature == 0
        and params.repeat_penalty == 1.0
        and params.frequency_penalty == 0.0
        and params.presence_penalty == 0.0
    )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):  # noqa: B905 - lengths differ by design
        if x != y:
            break
        n += 1
    return n


class Scheduler:
    def __init__(
        self,
        model: _internals.LlamaModel,
        settings: EngineSettings,
        share: ThreadShare,
        n_ctx_per_sequence: int,
        parallel: int,
        visible_special: frozenset[int] = frozenset(),
        n_batch: int = BATCH_TOKENS,
        projector: Projector | None = None,
    ) -> None:
        """``settings`` are the runner's engine settings as they came; ``n_ctx_per_sequence``
        and ``parallel`` are what the engine made of ``ctx`` and ``parallel`` for this model;
        ``visible_special`` are the special tokens written out as text (thought and tool-call
        markers)."""
        self._model = model
        self._projector = projector
        self._visible_special = visible_special
        self._settings = settings
        self._vocab = model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._logits_address = logits_address()
        self._logits_rows: dict[int, numpy.ndarray[Any, Any]] = {}  # by address (_argmax)
        self._pieces: dict[int, bytes] = {}  # each token's text, detokenized once
        self._end_tokens: dict[int, bool] = {}  # whether a token ends a generation
        self.parallel = parallel
        self.n_batch = max(n_batch, parallel)
        self._shared = not settings.batch_exact
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.kv_cells(n_ctx_per_sequence, parallel)
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = parallel
        self._share = share
        self._threads = share.threads
        params.n_threads = self._threads
        params.n_threads_batch = self._threads
        params.flash_attn_type = FLASH_ATTENTION[flash_attention(settings)]
        params.type_k = GGML_TYPES[settings.cache_type_k]
        params.type_v = GGML_TYPES[settings.cache_type_v]
        # Shared (the default): one KV cache whose cells the sequences take as they grow, so
        # memory follows use (``kv.py``). batch_exact: one KV stream per slot, so a sequence's
        # attention never depends on what else is in the batch and a request gives the same
        # tokens alone or among others (with one shared stream, the attention rows of every
        # sequence grow with the others' cells and the float sums round differently).
        params.kv_unified = self._shared
        self._ctx = llama_cpp.llama_init_from_model(model.model, params)
        if not self._ctx:
            raise RuntimeError("llama.cpp could not create the batching context")
        self.kv_cells = int(llama_cpp.llama_n_ctx(self._ctx))
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._slots = [Slot(seq_id) for seq_id in range(parallel)]
        self._cells = SharedCells(self._memory, self.kv_cells, self._slots)
        self._active: list[Sequence] = []
        self._waiting: deque[tuple[GenerationRequest, Sink]] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self.meter = ThroughputMeter()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._thread.start()

    # -- called from other threads ----------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink) -> None:
        with self._wakeup:
            self._waiting.append((request, sink))
            self._wakeup.notify()

    def check_before_serving(self, check: Callable[[Any, Any], None]) -> None:
        """Run ``check(ctx, batch)``, the engine check's decodes, on this context and batch
        while nothing runs (the lock holds submissions back until it is done), with every cell
        forgotten before (any cached prompt's) and after (the check's)."""
        with self._wakeup:
            if self._active or self._waiting:
                raise RuntimeError("the engine check runs before the scheduler serves")
            self._forget_all()
            try:
                check(self._ctx, self._batch)
            finally:
                self._forget_all()

    def _forget_all(self) -> None:
        for slot in self._slots:  # one slot a sequence, so the check's sequences' too
            slot.forget(self._memory)

    def close(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout=5)
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if not self._active and not self._waiting:
                self.meter.flush()  # the last partial interval, before going idle
            with self._wakeup:
                while not self._stopping and not self._active and not self._waiting:
                    self._wakeup.wait()
                if self._stopping:
                    return
            try:
                self._admit()
                self._drop_cancelled()
                if self._active:
                    self._step()
            except Exception as exc:  # fail the requests in flight, keep the loop alive
                log.exception("Batch step failed")
                for sequence in list(self._active):
                    self._finish(sequence, exc)

    def _admit(self) -> None:
        with self._wakeup:
            while self._waiting:
                request, sink = self._waiting[0]
                if sink.cancelled.is_set():
                    self._waiting.popleft()
                    sink.stats.finish_reason = "cancelled"
                    sink.close()
                    continue
                if not self._fits(request):
                    return  # the shared KV cache is full: wait for running sequences to end
                slot = self._claim_slot(request.prompt_tokens)
                if slot is None:
                    return
                self._waiting.popleft()
                try:
                    self._start(slot, request, sink)
                except Exception as exc:  # this request fails alone; the others go on
                    log.exception("Could not start a sequence")
                    slot.busy = False
                    sink.close(exc)

    def _fits(self, request: GenerationRequest) -> bool:
        if not self._shared:
            return True
        committed = (max(len(s.slot.cached), len(s.prompt)) for s in self._active)
        return self._cells.admits(len(request.prompt_tokens), committed)

    @property
    def kv_cells_used(self) -> int:
        return self._cells.used

    def _claim_slot(self, prompt: list[int]) -> Slot | None:
        free = [slot for slot in self._slots if not slot.busy]
        if not free:
            return None
        # Prefer the free slot that already holds the longest prefix; else the least recently
        # used one, whose idle prefix is the one to evict.
        best = max(free, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))
        best.busy = True
        return best

    def _start(self, slot: Slot, request: GenerationRequest, sink: Sink) -> None:
        prompt = request.prompt_tokens
        # The last prompt token is always decoded again: its logits give the first sample.
        limit = len(prompt) - 1
        own = common_prefix(slot.cached, prompt) if self._settings.prefix_reuse else 0
        donor = max(self._slots, key=lambda s: common_prefix(s.cached, prompt))
        donated = common_prefix(donor.cached, prompt) if self._settings.prefix_reuse else 0
        if request.images is not None:  # an image is in the cache whole, or not at all
            own, donated = request.images.whole(own), request.images.whole(donated)
        if donated > own and donor is not slot:
            reuse = min(donated, limit)
            # Slots live in separate KV streams, which llama.cpp copies only whole: take the
            # donor's sequence, then cut it back to the shared prefix.
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, donor.seq_id, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1)
        else:
            reuse = min(own, limit)
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, reuse, -1)
        slot.cached = prompt[:reuse]
        if self._shared:
            self._clear_idle_slots()
        params = request.params
        stats = sink.stats
        stats.cached_tokens = reuse
        text = TextAssembler(self._detokenize, self._is_eog, params.stop, request.max_tokens, stats)
        # Drafts copy the prompt: never its image placeholders.
        lookup = PromptLookup(prompt) if request.prompt_lookup and not request.images else None
        watch = ThoughtWatch(request.thought) if request.thought else None
        sampler = self._sampler(request)
        self._active.append(
            Sequence(slot, request, sink, sampler, text, reuse, lookup=lookup, watch=watch)
        )
        if reuse:
            log.debug("slot %d reuses %d of %d prompt tokens", slot.seq_id, reuse, len(prompt))

    def _sampler(self, request: GenerationRequest) -> _internals.LlamaSampler | None:
        """The same chain, in the same order, as llama-cpp-python's ``Llama`` builds; None
        when that chain would only take the argmax (``_argmax`` does it faster)."""
        p = request.params
        if plain_greedy(p) and request.grammar is None:
            return None
        sampler = _internals.LlamaSampler()  # type: ignore[no-untyped-call]
        sampler.add_penalties(
            self._n_vocab,
            PENALTY_LAST_N,
            p.repeat_penalty,
            p.frequency_penalty,
            p.presence_penalty,
        )
        if request.grammar is not None:
            sampler.add_grammar(self._model, request.grammar)
        if p.temperature == 0:
            sampler.add_greedy()  # type: ignore[no-untyped-call]
        else:
            seed = p.seed if p.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
            sampler.add_top_k(p.top_k)
            sampler.add_typical(1.0, 1)
            sampler.add_top_p(p.top_p, 1)
            sampler.add_min_p(p.min_p, 1)
            sampler.add_temp(p.temperature)
            sampler.add_dist(seed)
        return sampler

    def _apply_thread_share(self) -> None:
        """Use the thread count the daemon granted last (on this thread, between decodes)."""
        self._threads = self._share.apply(self._ctx, self._threads, "batch loop")

    def _drop_cancelled(self) -> None:
        for sequence in list(self._active):
            if sequence.sink.cancelled.is_set():
                sequence.text.cancel()
                self._finish(sequence)

    def _step(self) -> None:
        """One ``llama_decode``: a token for every generating sequence, then prompt chunks."""
        batch = self._batch
        rows = prefilled = 0
        if self._shared:
            self._room_to_generate()
        generating = [s for s in self._active if s.generating]
        draft_budget = DRAFT_ROW_BUDGET - len(generating)
        if self._shared:
            draft_budget = min(draft_budget, self._cells.free - len(generating))
        for sequence in self._active:
            sequence.sample_rows = []
            sequence.drafts = []
        for sequence in generating:
            assert sequence.next_token is not None
            self._add(rows, sequence.next_token, sequence, logits=True)
            sequence.next_token = None
            rows += 1
            drafts = self._drafts(sequence, min(draft_budget, self.n_batch - rows))
            for token in drafts:
                self._add(rows, token, sequence, logits=True)
                rows += 1
            draft_budget -= len(drafts)
        prefilled += self._prefill_images()
        for sequence in self._active:
            missing = len(sequence.prompt) - sequence.prefilled
            if missing <= 0 or rows >= self.n_batch:
                continue
            chunk = min(missing, self.n_batch - rows, self._prefill_room(sequence, missing))
            images = sequence.request.images
            next_image = images.next_start(sequence.prefilled) if images else None
            if next_image is not None:  # text up to the image; the image in a later step
                chunk = min(chunk, next_image - sequence.prefilled)
            if chunk <= 0:
                continue
            for offset in range(chunk):
                position = sequence.prefilled + offset
                last = position == len(sequence.prompt) - 1
                self._add(rows, sequence.prompt[position], sequence, logits=last)
                rows += 1
            sequence.prefilled += chunk
            prefilled += chunk
        if rows == 0:
            return
        self._apply_thread_share()
        batch.n_tokens = rows
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status == 1 and self._shared and self._cells.make_room(self._cells.cells):
            log.warning("the KV cache had no room for a step; idle prefixes dropped")
            status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        active = len(self._active)
        generated = sum(self._sample(s) for s in list(self._active) if s.sample_rows)
        elapsed = time.perf_counter() - started
        self.meter.add(prefilled, generated, elapsed, active, self._cells.used)

    def _prefill_images(self) -> int:
        """Decode the images that come next in their sequences' prompts, each on its own (an
        image's embeddings cannot share a batch with tokens), into the sequence's cells; the
        image positions filled. Only once every position before an image is in the cache."""
        filled = 0
        for sequence in list(self._active):
            images = sequence.request.images
            while images is not None and self._projector is not None:
                image = images.image_at(sequence.prefilled)
                if image is None or image.start != len(sequence.slot.cached):
                    break
                if self._prefill_room(sequence, image.n_tokens) < image.n_tokens:
                    break  # waits for cells
                try:
                    cached = self._projector.decode(
                        self._ctx, image, sequence.slot.seq_id, self.n_batch
                    )
                except Exception as exc:  # this request fails alone
                    log.exception("Could not decode an image")
                    self._finish(sequence, exc)
                    break
                sequence.slot.cached.extend(sequence.prompt[image.start : image.end])
                sequence.prefilled = image.end
                sequence.sink.stats.images += 1
                sequence.sink.stats.images_cached += cached
                filled += image.n_tokens
        return filled

    # -- the shared KV cache ----------------------------------------------------------------
    def _clear_idle_slots(self) -> None:
        """Drop the prefixes of idle slots as a request starts (as llama-server does with its
        unified cache): attention runs over the cache up to its highest used cell, and the
        cells of sequences that ran together are spread over it, so idle prefixes would slow
        every later step (a single stream ran at a third of its speed after a 32-stream
        burst). The slot the request took keeps its own prefix."""
        for slot in self._slots:
            if not slot.busy and slot.cached:
                slot.forget(self._memory)

    def _room_to_generate(self) -> None:
        """A cell for every generating sequence's next token: idle prefixes go first, then
        the youngest sequences are preempted, until the oldest one alone is left."""
        while not self._cells.make_room(sum(s.generating for s in self._active)):
            victims = [s for s in self._active if s.slot.cached][1:]
            if not victims:
                return
            self._preempt(victims[-1])

    def _prefill_room(self, sequence: Sequence, missing: int) -> int:
        """How many of ``sequence``'s prompt tokens may go into this step. A prompt not yet
        started waits until all of it fits, with room left for the answers being written."""
        if not self._shared:
            return missing
        reserve = GROWTH_RESERVE * sum(s.generating for s in self._active)
        if sequence.prefilled == 0 and not self._cells.make_room(missing + reserve):
            return 0
        self._cells.make_room(min(missing, self.n_batch) + reserve)
        return max(0, self._cells.free - reserve)

    def _preempt(self, sequence: Sequence) -> None:
        """Free a sequence's cells; it prefills what it had so far again when there is room,
        then goes on (its sampler, text and stats are untouched)."""
        history = list(sequence.slot.cached) if sequence.generating else list(sequence.prompt)
        if sequence.next_token is not None:
            history.append(sequence.next_token)  # sampled and sent, not yet decoded
        sequence.slot.forget(self._memory)
        sequence.history, sequence.prefilled, sequence.next_token = history, 0, None
        log.info(
            "KV cache full: slot %d preempted; it will prefill %d tokens again",
            sequence.slot.seq_id,
            len(history),
        )

    def _drafts(self, sequence: Sequence, room: int) -> list[int]:
        if sequence.lookup is None or room <= 0 or sequence.forced:
            return []
        # Never draft past the token budget: those rows could not be used.
        left = sequence.text.tokens_left - 1
        limit = min(room, left, sequence.control.next_length())
        sequence.drafts = sequence.lookup.draft(limit)
        return sequence.drafts

    def _sample(self, sequence: Sequence) -> int:
        """Sample at each of the sequence's rows while the samples confirm its drafts; returns
        how many tokens it generated."""
        drafts = sequence.drafts
        accepted = sampled = 0
        for index, row in enumerate(sequence.sample_rows):
            sampled += 1
            token = self._next_token(sequence, row)
            if sequence.lookup is not None:
                sequence.lookup.extend([token])
            piece = sequence.text.feed(token)
            if piece:
                sequence.sink.emit(piece)
            if sequence.watch is not None:
                sequence.forced.extend(sequence.watch.after_token(piece))
                sequence.sink.stats.reasoning_tokens = sequence.watch.tokens
            confirmed = index < len(drafts) and token == drafts[index]
            accepted += confirmed
            if sequence.text.finished or not confirmed:
                break
        sequence.control.record(len(drafts), accepted)
        stats = sequence.sink.stats
        stats.accepted_draft_tokens += accepted
        stats.rejected_draft_tokens += len(drafts) - accepted
        # Cells of drafts the model did not confirm hold the wrong tokens: remove them.
        rejected = len(drafts) - accepted
        if rejected:
            slot = sequence.slot
            keep = len(slot.cached) - rejected
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
            del slot.cached[keep:]
        if sequence.text.finished:
            self._finish(sequence)
        else:
            sequence.next_token = token
        return sampled

    def _next_token(self, sequence: Sequence, row: int) -> int:
        """The sequence's sample at ``row``, or the next token it must write (a thought's
        closing marker when its budget ran out), which its sampler then takes as its own."""
        sampler = sequence.sampler
        if sequence.forced:
            token = sequence.forced.popleft()
            if sampler is not None:
                llama_cpp.llama_sampler_accept(sampler.sampler, token)
            return token
        if sampler is None:
            return self._argmax(row)
        return int(llama_cpp.llama_sampler_sample(sampler.sampler, self._ctx, row))

    def _argmax(self, row: int) -> int:
        """The token of the highest logit at batch row ``row`` (the first, on a tie, as
        llama.cpp's greedy sampler). The view of a row is kept by its address: llama.cpp just
        answered that address for this decode, so the memory under it is the live logits."""
        address = self._logits_address(self._ctx, row)
        if address is None:
            raise RuntimeError(f"llama.cpp has no logits for batch row {row}")
        logits = self._logits_rows.get(address)
        if logits is None:
            if len(self._logits_rows) >= self.n_batch:  # the output buffer moved: start over
                self._logits_rows.clear()
            values = (ctypes.c_float * self._n_vocab).from_address(address)
            logits = self._logits_rows[address] = numpy.frombuffer(values, dtype=numpy.float32)
        return int(logits.argmax())

    def _add(self, row: int, token: int, sequence: Sequence, logits: bool) -> None:
        """Put ``token`` in batch row ``row`` at the next position of the sequence's slot."""
        batch = self._batch
        batch.token[row] = token
        batch.pos[row] = len(sequence.slot.cached)
        sequence.slot.cached.append(token)
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = sequence.slot.seq_id
        batch.logits[row] = logits
        if logits:
            sequence.sample_rows.append(row)

    def _finish(self, sequence: Sequence, error: BaseException | None = None) -> None:
        self._active.remove(sequence)
        if sequence.sampler is not None:
            sequence.sampler.close()  # type: ignore[no-untyped-call]
        slot = sequence.slot
        slot.busy = False
        slot.last_used = time.monotonic()
        if error is not None:
            # The slot's cells may be half-written: forget them.
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.cached = []
        if sequence.sink.stats.finished_at is None:
            sequence.sink.stats.finished_at = time.perf_counter()
        sequence.sink.close(error)

    # -- tokens -----------------------------------------------------------------------------
    def _detokenize(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            special = token in self._visible_special
            piece = self._pieces[token] = self._model.detokenize([token], special=special)
        return piece

    def _is_eog(self, token: int) -> bool:
        ends = self._end_tokens.get(token)
        if ends is None:
            ends = self._end_tokens[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return ends
