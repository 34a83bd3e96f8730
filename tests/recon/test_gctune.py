"""The collector's batch setting: on for a pass over a file, and the previous setting back afterwards."""

from __future__ import annotations

import gc

import pytest

from functions.recon.gctune import OLDER, YOUNG, batch_collection
from functions.recon.matching import Matcher, Policy
from functions.recon.rows import MalformedRow
from tests.recon.test_matching import Lookup, World


def test_the_pass_runs_with_rare_collections_and_the_setting_comes_back() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with batch_collection():
        assert gc.get_threshold() == (YOUNG, OLDER, OLDER)
        assert gc.get_freeze_count() > frozen  # what was alive before the pass is not walked again
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_the_setting_comes_back_when_the_pass_fails() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with pytest.raises(RuntimeError), batch_collection():
        raise RuntimeError("the pass died")
    assert gc.get_threshold() == before and gc.get_freeze_count() == frozen


def test_cycles_made_during_the_pass_are_still_collected() -> None:
    class Node:
        pass

    with batch_collection():
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        del node
        assert gc.collect() >= 1


def test_the_matcher_feeds_and_finishes_under_the_batch_setting() -> None:
    before, seen = gc.get_threshold(), []
    world = World()
    matcher = Matcher(Policy("stripe"), Lookup(world), world, world, lambda _: seen.append(gc.get_threshold()))
    matcher.feed_all([MalformedRow(2, "bad row")])
    matcher.finish()
    assert seen == [(YOUNG, OLDER, OLDER)]
    assert gc.get_threshold() == before
