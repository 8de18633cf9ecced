"""Query stage: LookRequest -> segment -> crop -> embed -> search per garment -> enrich -> rank -> LookReply.

A polled batch of requests shares one segmentation call and one embedding call (batching across
concurrent requests). Every request gets exactly one reply on its ``reply_to`` topic, keyed and
headed with its request id: ok, partial (some garments failed), error (bad image, no garments,
reply topic refused) or expired (deadline passed: no inference spent on it). Invalid requests also go
to the DLQ. A dependency outage retries the batch; requests whose deadline passes meanwhile expire.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np

from contracts import codec
from contracts.models import (
    MAX_PRODUCT_IMAGES, BBox, GarmentMatches, LookReply, LookRequest, Match, ReplyStatus, utc_now,
)

from workers.adapters.milvus_index import MAX_LIMIT, GarmentIndex
from workers.adapters.garment_rows import Hit
from workers.adapters.product_state import MetadataCache, cached_metadata, live_hits
from workers.media.fetch import FetchUnavailable
from workers.media.garments import as_indexed
from workers.runtime import metrics as m
from workers.runtime.errors import PoisonError
from workers.runtime.records import Item, Out, Record, Result, Timings
from workers.runtime.settings import MAX_RECORD_BYTES, Settings
from workers.stages.ranking import best_per_product, rank
from workers.stages.segment_step import SegmentStep, Shot

log = logging.getLogger(__name__)

# What on_invalid must check itself before it may answer an undecodable request.
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
# Room for the record's key and headers beside the reply itself.
REPLY_MAX_BYTES = MAX_RECORD_BYTES - 64 * 1024


def reply_topic_allowed(reply_to: str, tenant: str, prefix: str) -> bool:
    """Replies go only to the tenant's own reply topics: ``<prefix>.<tenant>`` or ``<prefix>.<tenant>.*``."""
    own = f"{prefix}.{tenant}"
    return reply_to == own or reply_to.startswith(own + ".")


def reply_topic(req: LookRequest, prefix: str) -> str:
    """The one place that decides where a reply goes, whatever its status: the requested topic when it is
    one of the tenant's own, else the tenant's own topic. Nothing is ever produced outside them."""
    return req.reply_to if reply_topic_allowed(req.reply_to, req.tenant, prefix) else f"{prefix}.{req.tenant}"


def fit_reply(reply: LookReply, max_bytes: int) -> LookReply:
    """A reply that fits in one record: fewer matches per garment (the best kept), then no attributes.
    ``truncated`` says it was cut."""
    if len(codec.encode(reply)) <= max_bytes:
        return reply
    garments = list(reply.garments)
    keep = max((len(g.matches) for g in garments), default=0)
    while keep > 1:
        keep //= 2
        cut = reply.model_copy(update={"garments": [g.model_copy(update={"matches": g.matches[:keep]}) for g in garments],
                                       "truncated": True})
        if len(codec.encode(cut)) <= max_bytes:
            return cut
    bare = [g.model_copy(update={"matches": [mt.model_copy(update={"metadata": mt.metadata.model_copy(
        update={"attributes": {}})}) for mt in g.matches[:1]]}) for g in garments]
    cut = reply.model_copy(update={"garments": bare, "truncated": True})
    if len(codec.encode(cut)) <= max_bytes:
        return cut
    return reply.model_copy(update={"garments": [], "ranking": [], "truncated": True, "status": ReplyStatus.error,
                                    "error": "the answer was too large to send"})


class StatesUnavailable(Exception):
    """Redis could not be read (the cause is chained): the look falls back to a Strong search."""


# First page of a look's search, in hits per listed product: most products have one or two images.
FIRST_PAGE = 4


class QueryStage:
    name = "query"
    message_type = LookRequest

    def __init__(self, s: Settings, triton, index: GarmentIndex, cache: MetadataCache):
        self.s, self.triton, self.index, self.cache = s, triton, index, cache
        self.input_topic = s.topic_look_requests
        self.timings = Timings(self.name)
        self.step = SegmentStep(s, triton, self.timings)

    # ------------------------------------------------------------------ batch
    def process(self, items: list[Item[LookRequest]]) -> list[Result]:
        now = utc_now()
        results: list[Result | None] = [None] * len(items)
        pending: list[Shot] = []  # one shot per request still to answer: segmented in one Triton call
        for i, item in enumerate(items):
            req = item.msg
            if not reply_topic_allowed(req.reply_to, req.tenant, self.s.reply_topic_prefix):
                err = PoisonError(f"reply_to {req.reply_to!r} is not a reply topic of tenant {req.tenant!r} "
                                  f"(expected {self.s.reply_topic_prefix}.{req.tenant}[.*])", category="bad_reply_to")
                results[i] = self._reply(req, ReplyStatus.error, error=str(err), dead_letter=err)
                continue
            if req.deadline is not None and req.deadline <= now:
                results[i] = self._reply(req, ReplyStatus.expired, error="deadline passed before processing")
                continue
            try:
                pending.append(self.step.load(i, req.image, only=frozenset(req.garments) if req.garments else None))
            except PoisonError as e:
                results[i] = self._reply(req, ReplyStatus.error, error=f"bad image: {e.public}", dead_letter=e)
                continue
            except FetchUnavailable as e:  # the shopper is waiting: answer now (no retries, no dead letter)
                results[i] = self._reply(req, ReplyStatus.error, error=f"image could not be fetched, try again: {e}")
                continue
        if pending:
            self._answer(items, pending, results)
        return results  # type: ignore[return-value]

    def _answer(self, items: list[Item[LookRequest]], pending: list[Shot], results) -> None:
        segment_ms, crop_ms = self.step.segment(pending)
        with self.timings("crop") as lap:
            crops = [as_indexed(g.crop) for shot in pending for g in shot.garments]  # the pixels the index saw
        n = len(pending)
        vectors = np.zeros((0, 0), np.float32)  # no crops: nothing is sliced from it
        embed = None
        if crops:
            with self.timings("embed") as embed:
                vectors = self.triton.embed(np.stack(crops))
        start = 0
        for shot in pending:
            req, found = items[shot.owner].msg, shot.garments
            own = {"decode": shot.load_ms, "segment": segment_ms / n, "crop": (crop_ms + lap.ms) / n,
                   "embed": (embed.ms if embed else 0.0) / n}
            if not found:
                wanted = f" among {', '.join(req.garments)}" if req.garments else ""
                results[shot.owner] = self._reply(req, ReplyStatus.error, error=f"no garments found{wanted}", timings=own)
                continue
            results[shot.owner] = self._search_and_reply(req, found, vectors[start : start + len(found)], own)
            start += len(found)

    def _search_and_reply(self, req: LookRequest, found, vectors: np.ndarray, own: dict) -> Result:
        """All garments searched at once (one search per label, in parallel), then every hit checked against its product's state in
        Redis: a deleted product or a replaced image's rows never reach the reply. The first page holds
        FIRST_PAGE hits per listed product (most products have one or two images); a garment whose page was
        full but holds fewer than ``top_k`` live products is searched again with room for every product's
        MAX_PRODUCT_IMAGES. Without Redis (down, or any error) the look is searched again at Strong consistency."""
        garments: list[GarmentMatches] = []
        failed: list[str] = []
        queries = [(g.label, vec) for g, vec in zip(found, vectors)]
        first = min(FIRST_PAGE * req.top_k, MAX_LIMIT)
        full = min(2 * req.top_k * MAX_PRODUCT_IMAGES, MAX_LIMIT)
        with self.timings("search") as lap:
            searched = self.index.search_garments(req.tenant, queries, first, req.filters)
        own["search"] = lap.ms
        with self.timings("enrich") as lap:
            states: dict | None = {}
            try:
                live = self._live(req, searched, states)
                short = [i for i, (hits, kept) in enumerate(zip(searched, live)) if not isinstance(hits, Exception)
                         and len(hits) >= first and len({h.product_id for h in kept}) < req.top_k]
                if short and first < full:
                    again = self.index.search_garments(req.tenant, [queries[i] for i in short], full, req.filters)
                    for i, kept in zip(short, self._live(req, again, states)):
                        live[i] = kept
            except StatesUnavailable as e:  # an outage or any Redis error: the reply must still go out
                log.warning("product states unavailable (%s); searching at Strong consistency", e.__cause__,
                            extra={"request_id": req.request_id})
                states = None
                live = self.index.search_garments(req.tenant, queries, full, req.filters, consistency="Strong")
            picked = {}  # garment index -> its best hit per product (a product once: its best image)
            for i, (g, hits) in enumerate(zip(found, live)):
                if isinstance(hits, Exception):
                    log.warning("search for %s failed: %s", g.label, hits, extra={"request_id": req.request_id})
                    failed.append(g.label)
                else:
                    picked[i] = [(h, cached_metadata(states, h)) for h in best_per_product(hits, req.top_k)]
            # searches return the fields a state check needs; metadata Redis lacks is read for the listed hits only
            rows = self.index.row_fields([h.id for hs in picked.values() for h, md in hs if md is None],
                                         consistency="Strong" if states is None else None)
            for i, hs in picked.items():
                g = found[i]
                matches = [Match(product_id=h.product_id, score=round(h.score, 6),
                                 metadata=md or Hit(h.product_id, h.label, h.score, rows.get(h.id, h.fields)).metadata(),
                                 metadata_source="redis" if md else "milvus") for h, md in hs]
                garments.append(GarmentMatches(label=g.label, bbox=BBox(**g.bbox.model_dump()),
                                               mask_fraction=round(g.mask_fraction, 6), matches=matches))
        own["enrich"] = lap.ms
        if failed and not garments:
            return self._reply(req, ReplyStatus.error, error=f"search failed for {', '.join(failed)}", timings=own)
        status = ReplyStatus.partial if failed else ReplyStatus.ok
        error = f"search failed for {', '.join(failed)}" if failed else None
        return self._reply(req, status, error=error, garments=garments, ranking=rank(garments, req.strategy),
                           timings=own)

    def _live(self, req: LookRequest, searched: list, states: dict) -> list:
        """The hits their product's state vouches for (or, unknown to Redis, a Strong read confirms); the
        states it lacks are read into ``states``."""
        ids = sorted({h.product_id for hits in searched if not isinstance(hits, Exception) for h in hits} - set(states))
        if ids:
            try:
                got = self.cache.get_states([(req.tenant, p) for p in ids])
            except Exception as e:
                raise StatesUnavailable() from e
            states.update({k[1]: st for k, st in got.items()})
        unknown = [h.id for hits in searched if not isinstance(hits, Exception) for h in hits
                   if h.product_id not in states]
        confirmed = self.index.existing_ids(unknown) if unknown else set()
        return [hits if isinstance(hits, Exception) else live_hits(hits, states, confirmed) for hits in searched]

    # ------------------------------------------------------------------ replies
    def _reply(self, req: LookRequest, status: ReplyStatus, *, error: str | None = None, garments=(), ranking=(),
               timings: dict | None = None, dead_letter: PoisonError | None = None) -> Result:
        total = (utc_now() - req.sent_at).total_seconds()
        timings = {**(timings or {}), "total": total * 1000}
        reply = LookReply(request_id=req.request_id, tenant=req.tenant, status=status, error=error,
                          garments=list(garments), ranking=list(ranking), strategy=req.strategy,
                          timings_ms={k: round(v, 3) for k, v in timings.items()})
        reply = fit_reply(reply, REPLY_MAX_BYTES)
        m.QUERY_REPLIES.labels(status.value).inc()
        if status in (ReplyStatus.ok, ReplyStatus.partial):
            m.END_TO_END_SECONDS.labels(self.name).observe(max(0.0, total))
        out = Out.of(reply_topic(req, self.s.reply_topic_prefix), reply, key=req.request_id,
                     extra_headers=((codec.HEADER_REQUEST_ID, req.request_id.encode()),))
        return Result([out], dead_letter=dead_letter)

    def on_undeliverable(self, record: Record, out: Out, error: PoisonError) -> list[Out]:
        """A reply the broker refused for good: a small error reply on the tenant's own topic instead."""
        try:
            sent = json.loads(out.value)
            request_id, tenant = str(sent["request_id"]), str(sent["tenant"])
        except Exception:  # noqa: BLE001 - not a reply: the dead letter alone says it
            return []
        if not (_TENANT.fullmatch(tenant) and _ID.fullmatch(request_id)):
            return []
        reply = LookReply(request_id=request_id, tenant=tenant, status=ReplyStatus.error,
                          error="the answer could not be delivered to its reply topic")
        m.QUERY_REPLIES.labels("error").inc()
        return [Out.of(f"{self.s.reply_topic_prefix}.{tenant}", reply, key=request_id,
                       extra_headers=((codec.HEADER_REQUEST_ID, request_id.encode()),))]

    def on_invalid(self, record: Record, error: PoisonError) -> list[Out]:
        """An undecodable request still gets an error reply if we can tell where to send it."""
        try:
            raw = json.loads(record.value or b"")
            request_id, tenant, reply_to = str(raw["request_id"]), str(raw["tenant"]), str(raw["reply_to"])
        except Exception:
            return []
        if not (_TOPIC.fullmatch(reply_to) and _TENANT.fullmatch(tenant) and _ID.fullmatch(request_id)) \
                or not reply_topic_allowed(reply_to, tenant, self.s.reply_topic_prefix):
            return []
        try:
            reply = LookReply(request_id=request_id, tenant=tenant, status=ReplyStatus.error,
                              error=f"invalid request: {error.public}")
        except ValueError:
            return []
        m.QUERY_REPLIES.labels("error").inc()
        return [Out.of(reply_to, reply, key=request_id,
                       extra_headers=((codec.HEADER_REQUEST_ID, request_id.encode()),))]

    def ready_checks(self):
        # the Milvus probe has its own client: a readiness check never closes the channel work is using
        return {"triton": self.triton.ready, "milvus": GarmentIndex(self.s, self.triton.embedder).ping}
