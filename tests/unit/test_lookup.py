"""Prompt-lookup drafting and its back-off, without a model."""

from __future__ import annotations

from localserve.runner.lookup import MAX_COOLDOWN, MAX_DRAFT, DraftControl, PromptLookup


def test_draft_follows_the_latest_earlier_occurrence() -> None:
    lookup = PromptLookup([1, 2, 3, 10, 11, 5, 1, 2, 3, 20, 21, 22, 9, 1, 2, 3])
    assert lookup.draft(2) == [20, 21]
    assert lookup.draft(10) == [20, 21, 22, 9, 1, 2, 3]


def test_longer_matches_win_over_shorter_ones() -> None:
    # The bigram (2, 3) last appeared before 30; the trigram (1, 2, 3) before 10.
    lookup = PromptLookup([1, 2, 3, 10, 7, 2, 3, 30, 1, 2, 3])
    assert lookup.draft(1) == [10]
    lookup = PromptLookup([7, 2, 3, 30, 8, 2, 3])
    assert lookup.draft(1) == [30]


def test_no_draft_without_a_match_or_room() -> None:
    assert PromptLookup([1, 2, 3, 4]).draft(4) == []
    assert PromptLookup([1, 2, 1, 2]).draft(0) == []
    assert PromptLookup([]).draft(4) == []


def test_extend_indexes_new_tokens() -> None:
    lookup = PromptLookup([5, 6, 7, 8])
    assert lookup.draft(2) == []
    lookup.extend([5, 6])
    assert lookup.draft(2) == [7, 8]


def test_confirmed_drafts_grow_to_the_cap() -> None:
    control = DraftControl()
    for _ in range(6):
        length = control.next_length()
        control.record(length, length)
    assert control.next_length() == MAX_DRAFT


def test_misses_pause_drafting_longer_each_time_up_to_the_cap() -> None:
    control = DraftControl()
    pauses = []
    for _ in range(8):
        length = control.next_length()
        assert length > 0
        control.record(length, 0)
        pause = 0
        while control.next_length() == 0:
            pause += 1
        pauses.append(pause)
    assert pauses[:4] == [1, 2, 4, 8]
    assert max(pauses) == MAX_COOLDOWN


def test_half_confirmed_drafts_do_not_keep_drafting() -> None:
    """One of two confirmed costs more than it saves; alternating hits must not reset the pause."""
    control = DraftControl()
    steps_drafting = 0
    for _ in range(200):
        length = control.next_length()
        if length:
            steps_drafting += 1
            control.record(length, length // 2)
    assert steps_drafting < 30
