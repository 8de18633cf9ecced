"""Selection and replay planning of `lookstream dlq` (pure logic; the broker side is in tests/integration)."""

import pytest

from contracts.models import DeadLetter, utc_now
from workers.local.dlq import DlqError, Letter, Selection, listing, parse_offsets, parse_ref, plan_replay


def letter(offset, source="catalog.products", error_type="bad_image", reason="corrupt image", event_id=None,
           topic="catalog.products.dlq", partition=0):
    d = DeadLetter(stage="segmentation", source_topic=source, partition=1, offset=offset, value=b"{}",
                   reason=reason, error_type=error_type, attempts=1, event_id=event_id, first_seen_at=utc_now())
    return Letter(topic, partition, offset, d)


def test_refs_and_offset_ranges_parse_or_say_what_is_expected():
    assert parse_ref("catalog.products.dlq/2@17") == ("catalog.products.dlq", 2, 17)
    assert parse_offsets("5-9") == (5, 9) and parse_offsets("5-") == (5, None) and parse_offsets("5") == (5, 5)
    with pytest.raises(DlqError, match="TOPIC/PARTITION@OFFSET"):
        parse_ref("catalog.products.dlq:2:17")
    with pytest.raises(DlqError, match="offset range"):
        parse_offsets("a-b")


def test_every_filter_must_match():
    xs = [letter(0), letter(1, error_type="image_fetch", reason="image file NOT found: x", event_id="e1"),
          letter(2, partition=3), Letter("catalog.products.dlq", 0, 3, None, "not a DeadLetter")]
    pick = lambda **kw: [x.offset for x in xs if Selection(**kw).matches(x)]  # noqa: E731
    assert pick() == [0, 1, 2]  # an unreadable record is never selected
    assert pick(error_type="FETCH") == [1]
    assert pick(reason="not found") == [1]
    assert pick(event_ids=["e1", "e9"]) == [1]
    assert pick(partition=3) == [2]
    assert pick(offsets=(1, None)) == [1, 2] and pick(offsets=(0, 1)) == [0, 1]
    assert pick(source_topics=["catalog.garments"]) == []
    assert pick(error_type="fetch", partition=3) == []
    li = listing(xs)
    assert li.counts == {("catalog.products", "bad_image"): 2, ("catalog.products", "image_fetch"): 1}
    assert [x.offset for x in li.unreadable] == [3]


def test_a_dead_letter_is_replayed_only_to_the_topic_its_dlq_belongs_to():
    ok = letter(0)
    forged = letter(1, source="looks.replies.other-tenant")
    plan = plan_replay([ok, forged], Selection())
    assert plan.chosen == [ok]
    assert [x for x, _ in plan.refused] == [forged] and "is not the topic of" in plan.refused[0][1]
