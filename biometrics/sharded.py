"""Exact 1:N search over a gallery sharded across a Ray cluster, each shard held by two replicas on two nodes.

A subject lives in exactly one shard (:func:`shard_of`: CRC-32 of its id, modulo the number of shards), so a
subject's best template is found within its shard and the one-per-subject top k of the whole gallery is the
merge of the shards' top k. Each shard is held by ``replicas`` Ray actors (:class:`ShardReplica`, each a
:class:`biometrics.matcher.TemplateIndex`), placed by one placement group per shard whose bundles are spread
over distinct nodes (``STRICT_SPREAD`` by default), so losing one node loses at most one replica of a shard.

**Search** (:meth:`ShardedGallery.search`) scatters the probes to one replica of every shard and gathers
their top k (exact float64 distances, as ``TemplateIndex`` computes them); the merged list is each probe's k
nearest subjects by distance (ties of exactly equal distance ordered by subject id, where the one-process
index orders them by insertion). A replica that fails or does not answer within ``search_timeout`` is marked
down and that shard is asked of its other replica; a shard that has not answered after ``hedge_after`` (or three
times its last search time, if longer) is asked of its other replica as well, and the first answer is taken (a
node that dies is noticed by Ray only seconds later: the hedge bounds the pause); a down replica is pinged in
the background and used again once it answers. If no replica of some shard answers, the search raises
:class:`ShardUnavailable` (gRPC ``UNAVAILABLE``) instead of answering from part of the gallery: a duplicate
missed in silence is the worst outcome at a border.

**Writes** (``add``, ``add_many``, ``remove``) go to every replica of the subject's shard, without Ray retries,
and are idempotent: an ``add`` of templates a subject already holds adds nothing; a ``remove`` of an absent
subject removes nothing. **Restarts**: an actor is restarted by Ray (``max_restarts``; its placement group
bundle is rescheduled to a live node if its node died) and reloads its shard from the ``loader`` the gallery
was given: ``loader(shard, shards)`` yields pages ``(subject_ids, templates)`` of the subjects of that shard
as the source of truth holds them *now* (in production the register, read as a station reads it at a cold
start; in tests :class:`MemorySource`). The source must be written before the gallery (the register commits
first, the stations follow its change log), so a write that reaches a replica while it reloads is either
already in what it loaded (a no-op) or applied after, in submission order; a write that fails on a dead
replica is dropped, the replica's reload brings it. A write that *no* replica takes (the shard down) does not
fail either: the station's change log goes on (an erasure in another shard is never held up by it), and the
shard's replicas, marked stale, reload before they answer again; meanwhile every read of that shard raises
:class:`ShardUnavailable`. A replica whose load fails (at its start, a Ray restart or a reload) stays up and
unloaded, refusing calls, until a later ping loads it: an actor whose constructor raised would never be
restarted by Ray.

Ray is imported lazily (only by this module, inside its functions), so nothing else in the project needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from biometrics.errors import RegisterUnavailable, SubjectNotFound
from biometrics.matcher import as_probes, as_templates

log = logging.getLogger(__name__)

#: ``loader(shard, shards)`` -> pages ``(subject_ids, templates (M, D))`` of that shard's subjects, as of now.
#: A loader may also have ``size_hint(shard, shards)`` -> about how many templates the shard holds (the replica
#: reserves room for them before the first page).
Loader = Callable[[int, int], Iterable[tuple[Sequence[str], np.ndarray]]]

DEFAULT_SEARCH_TIMEOUT = 30.0
DEFAULT_WRITE_TIMEOUT = 30.0
# A shard that has not answered after max(this, 3 x its last search time) is asked of its next replica as well.
DEFAULT_HEDGE_AFTER = 1.0
# A replica marked down is pinged at most this often.
PING_INTERVAL = 0.5
# Once one replica has applied a write, how long the others are waited for (a slow one gets it queued, in order).
WRITE_GRACE = 1.0


class ShardUnavailable(RegisterUnavailable):
    """No replica of some shard of the sharded gallery answers: the search is refused rather than answered
    from part of the gallery (gRPC UNAVAILABLE, like the register away)."""

    @classmethod
    def unreachable(cls, shard: int) -> ShardUnavailable:
        """The refusal when no replica of ``shard`` answers."""
        return cls(f"Shard {shard} of the gallery cannot be reached now; please try again shortly.")


def shard_of(subject_id: str, shards: int) -> int:
    """The shard that holds ``subject_id`` (stable across processes and Python versions)."""
    return zlib.crc32(subject_id.encode("utf-8")) % shards


def shards_of(subject_ids: Sequence[str], shards: int) -> np.ndarray:
    """:func:`shard_of` of each id, as an int array."""
    return np.fromiter((zlib.crc32(s.encode("utf-8")) % shards for s in subject_ids), dtype=np.int64,
                       count=len(subject_ids))


# -- the replica (a plain class; made a Ray actor by ShardedGallery) ----------------------------------------

class ShardReplica:
    """One replica of one shard: a ``TemplateIndex`` of that shard's subjects, loaded from the loader."""

    def __init__(self, shard: int, shards: int, dim: int, loader: Loader, index: str = "exact") -> None:
        self.shard, self.shards, self.dim = shard, shards, dim
        self._index_kind = index
        self._loader = loader
        self.index: Any = None
        self.load_error = ""  # why the last load failed ("" once loaded)
        self.load_seconds, self.loaded_at = 0.0, 0.0
        # A loader that fails here (the register briefly unreachable, the key file missing on a new node) must not
        # fail the constructor: Ray never restarts an actor whose creation task failed, whatever max_restarts. The
        # replica stays up, unloaded: every call but ping raises ShardUnavailable, and a ping loads it again.
        self._try_load()

    def _try_load(self) -> bool:
        """Load the shard from the loader; on failure leave the replica unloaded, the error kept. Whether loaded."""
        started = time.monotonic()
        self.index = None  # the old index is freed before the new one is built
        try:
            self.index = self._load()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("shard %d: loading from the loader failed; the replica stays unloaded", self.shard)
            return False
        self.load_error = ""
        self.load_seconds, self.loaded_at = time.monotonic() - started, time.time()
        return True

    def _load(self) -> Any:
        index = self._new_index()
        hint = getattr(self._loader, "size_hint", None)
        if hint is not None:  # room for the whole shard at once: no buffer grown (and copied) page after page
            index.reserve(int(hint(self.shard, self.shards)))
        for subject_ids, templates in self._loader(self.shard, self.shards):
            ids = list(subject_ids)
            if not ids:
                continue
            wrong = np.flatnonzero(shards_of(ids, self.shards) != self.shard)
            if len(wrong):
                raise ValueError(f"the loader gave shard {self.shard} subject {ids[wrong[0]]!r} of another shard")
            index.add_many(ids, templates)
        return index

    def reload(self) -> int:
        """Load the shard again from the loader (after a write this replica may have missed); templates held.
        Raises :class:`ShardUnavailable` (the replica left unloaded) if the loader fails."""
        if not self._try_load():
            raise self._unloaded()
        return len(self.index)

    def _new_index(self) -> Any:
        if self._index_kind == "exact":
            from biometrics.matcher import TemplateIndex

            return TemplateIndex(self.dim)
        if self._index_kind == "int8":
            from biometrics.compact import CompactIndex

            return CompactIndex(self.dim)
        raise ValueError(f"unknown index kind {self._index_kind!r} (exact or int8)")

    def info(self) -> dict[str, Any]:
        """Where this replica runs and what it holds."""
        import ray

        rss = 0
        try:
            with open(f"/proc/{os.getpid()}/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
        return {
            "shard": self.shard,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "templates": len(self._loaded()),
            "subjects": self._loaded().subject_count,
            "index_bytes": int(self._loaded().nbytes),
            "rss": rss,
            "load_seconds": self.load_seconds,
            "loaded_at": self.loaded_at,
        }

    def ping(self) -> int:
        """The shard number, once the replica is loaded: an unloaded one (its last load failed) loads first, and
        raises :class:`ShardUnavailable` if that fails again (the gallery pings it again later)."""
        if self.index is None and not self._try_load():
            raise self._unloaded()
        return self.shard

    def _unloaded(self) -> ShardUnavailable:
        return ShardUnavailable(f"Shard {self.shard}'s replica could not load its shard ({self.load_error}).")

    def _loaded(self) -> Any:
        if self.index is None:
            raise self._unloaded()
        return self.index

    def search(self, probes: np.ndarray, k: int) -> tuple[int, list[list[tuple[str, float]]], float]:
        """(shard, the shard's top k per probe, seconds spent searching in this process)."""
        self._loaded()
        started = time.perf_counter()
        found = self._loaded().search(probes, k)
        return self.shard, found, time.perf_counter() - started

    def add(self, subject_id: str, templates: np.ndarray) -> int:
        """Add the templates ``subject_id`` does not hold yet (idempotent); returns how many were added."""
        rows = np.atleast_2d(np.asarray(templates, dtype=np.float32))
        if subject_id in self._loaded():
            held = self._loaded().templates_of(subject_id)
            rows = np.array([r for r in rows if not (held == r).all(axis=1).any()], dtype=np.float32)
            rows = rows.reshape(-1, self.dim)
        if len(rows):
            self._loaded().add(subject_id, rows)
        return len(rows)

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> int:
        """Bulk :meth:`add` (one snapshot when no subject is held yet)."""
        ids = list(subject_ids)
        if any(s in self._loaded() for s in ids):
            rows = np.atleast_2d(np.asarray(templates, dtype=np.float32))
            return sum(self.add(s, rows[i]) for i, s in enumerate(ids))
        self._loaded().add_many(ids, templates)
        return len(ids)

    def remove(self, subject_id: str) -> int:
        """Remove the subject's templates; how many there were (0 if absent)."""
        return self._loaded().remove(subject_id)

    def compare(self, probe: np.ndarray, subject_id: str) -> float | None:
        """Smallest distance to the subject's templates, or None if the shard does not hold it."""
        if subject_id not in self._loaded():
            return None
        return self._loaded().compare(probe, subject_id)

    def templates_of(self, subject_id: str) -> np.ndarray:
        """A copy of the subject's templates ((0, D) if absent)."""
        return self._loaded().templates_of(subject_id)

    def contains(self, subject_id: str) -> bool:
        """Whether the shard holds the subject."""
        return subject_id in self._loaded()

    def size(self) -> tuple[int, int]:
        """(templates, subjects) held."""
        return len(self._loaded()), self._loaded().subject_count


# -- a source of truth for tests and demonstrations ------------------------------------------------------------

class MemorySource:
    """An in-memory stand-in for the register, to run as a Ray actor: ``put``/``delete`` subjects, page a shard.

    Production reloads from the register; this one lets tests control what a restarted replica finds.
    """

    def __init__(self) -> None:
        self._subjects: dict[str, np.ndarray] = {}
        self._delay = 0.0
        self._served = 0
        self._failing = False

    def set_delay(self, seconds: float) -> None:
        """Make every later :meth:`page` answer ``seconds`` after it has read the subjects (a slow link, in tests)."""
        self._delay = seconds

    def set_failing(self, failing: bool) -> None:
        """Make every later :meth:`page` raise (a register unreachable, in tests) until set back."""
        self._failing = failing

    def served(self) -> int:
        """How many pages have been read so far."""
        return self._served

    def put(self, subject_ids: Sequence[str], templates: np.ndarray) -> None:
        """Hold each subject's templates (row i for ``subject_ids[i]``; a subject's rows accumulate)."""
        rows = np.atleast_2d(np.asarray(templates, dtype=np.float32))
        for i, s in enumerate(subject_ids):
            held = self._subjects.get(s)
            self._subjects[s] = rows[i : i + 1] if held is None else np.vstack([held, rows[i : i + 1]])

    def delete(self, subject_id: str) -> None:
        """Forget a subject."""
        self._subjects.pop(subject_id, None)

    def page(self, shard: int, shards: int) -> tuple[list[str], np.ndarray]:
        """Every template of the shard's subjects, one row per template, in insertion order."""
        if self._failing:
            raise ConnectionError("the source cannot be reached (set_failing)")
        ids: list[str] = []
        rows: list[np.ndarray] = []
        for s, t in list(self._subjects.items()):
            if shard_of(s, shards) == shard:
                ids += [s] * len(t)
                rows.append(t)
        dim = next(iter(self._subjects.values())).shape[1] if self._subjects else 0
        self._served += 1
        time.sleep(self._delay)
        return ids, (np.vstack(rows) if rows else np.empty((0, dim), dtype=np.float32))


@dataclass(frozen=True)
class ActorLoader:
    """A loader that pages a shard from a named :class:`MemorySource` actor (picklable: it holds the name)."""

    name: str
    namespace: str

    def __call__(self, shard: int, shards: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        import ray

        source = ray.get_actor(self.name, namespace=self.namespace)
        yield ray.get(source.page.remote(shard, shards))


# -- the gallery ------------------------------------------------------------------------------------------------

@dataclass
class _Replica:
    shard: int
    index: int
    actor: Any
    down_since: float | None = None
    ping: Any = None  # an outstanding ping (or reload, if stale) ObjectRef while down
    stale: bool = False  # a write failed on it: searched only after a reload (submitted before the search)
    unconfirmed: list[Any] = field(default_factory=list)  # writes sent to it whose outcome is not known yet
    reloading: bool = False  # the outstanding ``ping`` is a reload
    pinged_at: float = 0.0


@dataclass
class SearchStats:
    """What the last search cost: the slowest shard's own search time, and the requests beyond one a shard
    (failovers to the other replica, and hedges: a slow shard asked of its other replica as well)."""

    seconds: float = 0.0
    slowest_shard_seconds: float = 0.0
    failovers: int = 0


class ShardedGallery:
    """A gallery of templates sharded over a Ray cluster; drop-in for ``TemplateIndex`` in 1:N search.

    ``shards`` shards, each held by ``replicas`` actors on distinct nodes (``strategy`` ``STRICT_SPREAD``: the
    cluster needs at least ``replicas`` nodes with ``bundle_cpus`` free each; ``SPREAD`` places them on
    distinct nodes only when it can). ``loader(shard, shards)`` is what a replica loads at its start and
    every restart. ``address``: the cluster to join if this process is not connected yet (``ray.init``'s
    address: ``HOST:PORT`` of the head's GCS, or ``ray://HOST:PORT`` through Ray Client). ``index``:
    ``exact`` (``TemplateIndex``) or ``int8`` (``CompactIndex``) in every replica. ``load_concurrency``: how
    many replicas may load at once while the gallery starts (a replica holds its shard twice while loading).
    ``env``: environment variables of the replica processes (default: :data:`biometrics.workers.SINGLE_THREAD_ENV`,
    native libraries on one thread, since the shards of one node already share its cores).
    """

    #: The replicas load their shards from the loader: a station's gallery does not load faces into it.
    loads_itself = True

    def __init__(
        self,
        dim: int,
        loader: Loader,
        *,
        shards: int,
        replicas: int = 2,
        address: str | None = None,
        namespace: str = "checkpoint",
        strategy: str = "STRICT_SPREAD",
        index: str = "exact",
        bundle_cpus: float = 0.01,
        max_restarts: int = -1,
        search_timeout: float = DEFAULT_SEARCH_TIMEOUT,
        hedge_after: float = DEFAULT_HEDGE_AFTER,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        start_timeout: float = 600.0,
        load_concurrency: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if dim <= 0:
            raise ValueError("the template dimension must be positive")
        if shards < 1 or replicas < 1:
            raise ValueError("a sharded gallery needs at least one shard and one replica")
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, logging_level="WARNING", log_to_driver=False)
        self.dim, self.shards, self.replicas = dim, shards, replicas
        self.search_timeout, self.write_timeout = search_timeout, write_timeout
        self.hedge_after = hedge_after
        self._typical: dict[int, float] = {}  # probes per search -> the slowest shard's time in the last one
        self.last_search = SearchStats()
        self._lock = threading.Lock()
        self._turn = 0
        if env is None:
            from biometrics.workers import SINGLE_THREAD_ENV  # here: a replica need not import the face stack

            env = dict(SINGLE_THREAD_ENV)
        actor_class = ray.remote(ShardReplica)
        self._groups = [placement_group([{"CPU": bundle_cpus}] * replicas, strategy=strategy) for _ in range(shards)]
        deadline = time.monotonic() + start_timeout
        for group in self._groups:
            ready, _ = ray.wait([group.ready()], timeout=max(deadline - time.monotonic(), 0.0))
            if not ready:
                self.close()
                raise ShardUnavailable(
                    f"The sharded gallery cannot place {replicas} replicas per shard ({strategy}) on this cluster.")
        self._replicas: list[list[_Replica]] = [[] for _ in range(shards)]
        wave = load_concurrency or shards * replicas
        pending: list[Any] = []
        for r in range(replicas):
            for s in range(shards):
                actor = actor_class.options(
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        placement_group=self._groups[s], placement_group_bundle_index=r),
                    num_cpus=bundle_cpus,
                    max_restarts=max_restarts,
                    max_task_retries=0,
                    runtime_env={"env_vars": env},
                ).remote(s, shards, dim, loader, index)
                self._replicas[s].append(_Replica(s, r, actor))
                pending.append(actor.ping.remote())
                if len(pending) >= wave:
                    self._await_loaded(pending, deadline)
                    pending = []
        self._await_loaded(pending, deadline)

    def _await_loaded(self, pings: list[Any], deadline: float) -> None:
        import ray

        if not pings:
            return
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=max(deadline - time.monotonic(), 0.0))
        if len(ready) < len(pings):
            self.close()
            raise ShardUnavailable("The sharded gallery's replicas did not load in time.")
        try:
            ray.get(ready)  # a replica whose loader failed raises here (its ping loads it once more)
        except Exception:
            self.close()
            raise

    # -- replica health -------------------------------------------------------------------------------------
    def _mark_down(self, replica: _Replica, stale: bool = False) -> None:
        with self._lock:
            if replica.down_since is None:
                replica.down_since = time.monotonic()
                replica.ping = None
            if stale:  # a ping, or a reload queued before this write, does not prove the replica has it
                replica.stale, replica.ping = True, None

    def _revive(self) -> None:
        """Ping the replicas marked down (at most every PING_INTERVAL); mark up those that answered."""
        import ray

        now = time.monotonic()
        with self._lock:
            for group in self._replicas:
                for replica in group:
                    if replica.down_since is None:
                        continue
                    if replica.ping is not None:
                        done, _ = ray.wait([replica.ping], timeout=0)
                        if done:
                            try:
                                ray.get(done[0])
                                if replica.reloading or not replica.stale:
                                    replica.down_since, replica.stale = None, False
                                    replica.ping = None
                                    continue
                            except Exception:
                                pass
                            replica.ping = None
                    if replica.ping is None and now - replica.pinged_at >= PING_INTERVAL:
                        self._send_ping(replica, now)

    def _send_ping(self, replica: _Replica, now: float) -> None:
        """(Lock held.) Ping a down replica, or make a stale one reload: later calls to it run after the reload."""
        method = replica.actor.reload if replica.stale else replica.actor.ping
        replica.ping, replica.pinged_at, replica.reloading = method.remote(), now, replica.stale

    def _settle(self, replica: _Replica, timeout: float = 0.0) -> bool:
        """Learn the outcome of the writes sent to ``replica`` (waiting up to ``timeout``): a failed one marks it
        stale. False while some write's outcome is still unknown: it must not be searched yet (a write sent
        while it restarted may fail after the new incarnation has answered other calls)."""
        import ray

        with self._lock:
            refs = list(replica.unconfirmed)
        if not refs:
            return True
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        failed = False
        for ref in done:
            _, failure = _from_replica(partial(ray.get, ref))
            if failure is not None:
                failed = True
        with self._lock:
            finished = set(done)
            replica.unconfirmed = [r for r in replica.unconfirmed if r not in finished]
        if failed:
            self._mark_down(replica, stale=True)
        return not pending

    def _usable(self, plan: list[_Replica], start: int, wait: bool = True) -> int | None:
        """Index in ``plan`` (from ``start``) of the first replica whose writes are all settled; the last one
        waits for its writes up to ``search_timeout`` if ``wait``. None if none can be used."""
        for i in range(start, len(plan)):
            last = wait and i == len(plan) - 1
            if self._settle(plan[i], timeout=self.search_timeout if last else 0.0):
                return i
        return None

    def _prepare(self, replica: _Replica) -> None:
        """Before a call to ``replica``: if it is stale, make sure a reload is queued ahead of the call."""
        with self._lock:
            if replica.stale and not (replica.ping is not None and replica.reloading):
                self._send_ping(replica, time.monotonic())

    def _order(self, shard: int) -> list[_Replica]:
        """The shard's replicas to try, in order: those up (taking turns), then those marked down."""
        with self._lock:
            self._turn += 1
            group = self._replicas[shard]
            rotated = group[self._turn % len(group):] + group[: self._turn % len(group)]
        return [r for r in rotated if r.down_since is None] + [r for r in rotated if r.down_since is not None]

    def replica_status(self) -> list[list[bool]]:
        """Per shard, per replica: marked up (True) or down (False), as the last calls found them."""
        self._revive()
        with self._lock:
            return [[r.down_since is None for r in group] for group in self._replicas]

    def info(self, timeout: float = 10.0) -> list[list[dict[str, Any] | None]]:
        """Per shard, per replica: :meth:`ShardReplica.info`, or None for a replica that does not answer."""
        import ray

        refs = [[r.actor.info.remote() for r in group] for group in self._replicas]
        out: list[list[dict[str, Any] | None]] = []
        deadline = time.monotonic() + timeout
        for group in refs:
            row: list[dict[str, Any] | None] = []
            for ref in group:
                try:
                    row.append(ray.get(ref, timeout=max(deadline - time.monotonic(), 0.01)))
                except Exception:
                    row.append(None)
            out.append(row)
        return out

    # -- reads ----------------------------------------------------------------------------------------------
    def _call_shard(self, shard: int, method: str, *args: Any) -> Any:
        """One call to one replica of ``shard``, failing over to the others; ShardUnavailable if none answers."""
        import ray

        def ask(replica: _Replica) -> Any:
            # Submitted inside _from_replica as well: a replica failure raised while submitting fails over too.
            return ray.get(getattr(replica.actor, method).remote(*args), timeout=self.search_timeout)

        self._revive()
        plan = self._order(shard)
        at = self._usable(plan, 0)
        while at is not None:
            replica = plan[at]
            self._prepare(replica)
            value, failure = _from_replica(partial(ask, replica))
            if failure is None:
                return value
            self._mark_down(replica)
            at = self._usable(plan, at + 1)
        raise ShardUnavailable.unreachable(shard)

    def search(self, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """For each probe, up to ``k`` (subject_id, distance) pairs, nearest first, one per subject.

        Same contract as :meth:`biometrics.matcher.TemplateIndex.search` (exact euclidean distances), over
        every shard; raises :class:`ShardUnavailable` if any shard has no replica that answers.
        """
        import ray

        q = as_probes(probes, self.dim)
        if k <= 0:
            return [[] for _ in range(len(q))]
        started = time.perf_counter()
        self._revive()
        ref = ray.put(q)
        plans = {s: self._order(s) for s in range(self.shards)}
        tried = dict.fromkeys(range(self.shards), 0)
        inflight: dict[Any, tuple[int, _Replica, float]] = {}  # request -> (shard, replica, deadline)
        hedge_at: dict[int, float] = {}  # shard -> when its next replica is asked too, if it has not answered
        delay = max(self.hedge_after, 3.0 * self._typical.get(len(q), 0.0))
        answers: dict[int, list[list[tuple[str, float]]]] = {}
        slowest = 0.0

        def ask(shard: int, replica: _Replica) -> None:
            """Send the search to ``replica``; the shard's next replica is asked too if it is slow."""
            self._prepare(replica)
            now = time.monotonic()
            inflight[replica.actor.search.remote(ref, k)] = (shard, replica, now + self.search_timeout)
            hedge_at[shard] = now + delay

        def submit(shard: int) -> None:
            plan = plans[shard]
            at = self._usable(plan, tried[shard]) if tried[shard] < len(plan) else None
            if at is None:
                log.info("shard %d: no further replica to ask (from %d of %d)", shard, tried[shard], len(plan))
                if not any(s == shard for s, _, _ in inflight.values()):
                    raise ShardUnavailable.unreachable(shard)
                return
            replica = plan[at]
            tried[shard] = at + 1
            log.debug("shard %d: asking replica %d", shard, replica.index)
            ask(shard, replica)

        def hedge(shard: int) -> None:
            """Ask the shard of a replica that has no request of this search in flight (one that failed
            before is asked again: it may have restarted), if there is one."""
            busy = {id(r) for s, r, _ in inflight.values() if s == shard}
            for replica in self._order(shard):
                if id(replica) in busy or not self._settle(replica, 0.0):
                    continue
                ask(shard, replica)
                tried[shard] += 1
                return

        def drop(request: Any) -> None:
            # Forgotten, not cancelled: a duplicate runs to its end on a live replica (cheap), and cancelling a
            # task of a replica whose node is dying can wait on that node.
            inflight.pop(request, None)

        try:
            for s in range(self.shards):
                submit(s)
            while len(answers) < self.shards:
                wake = min([d for _, _, d in inflight.values()] + list(hedge_at.values()))
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=max(wake - time.monotonic(), 0.0))
                now = time.monotonic()
                if not done:
                    for request, (shard, replica, deadline) in list(inflight.items()):
                        if deadline <= now:  # past its deadline: marked down, the shard's next replica asked
                            log.warning("shard %d replica %d did not answer in %.1f s", shard, replica.index,
                                        self.search_timeout)
                            drop(request)
                            self._mark_down(replica)
                            submit(shard)
                    for shard, when in list(hedge_at.items()):
                        if when <= now:  # slow (a node dying is noticed late): ask the next replica as well
                            del hedge_at[shard]
                            log.info("shard %d slow after %.2f s: asking its next replica too", shard, delay)
                            for other, replica, _ in list(inflight.values()):
                                if other == shard:  # later searches prefer the other until a ping answers
                                    self._mark_down(replica)
                            hedge(shard)
                    continue
                shard, replica, _ = inflight.pop(done[0])
                value, failure = _from_replica(partial(ray.get, done[0]))
                if failure is not None:
                    log.warning("shard %d replica %d failed (%s): failing over", shard, replica.index,
                                type(failure).__name__)
                    self._mark_down(replica)
                    if shard not in answers:
                        submit(shard)
                    continue
                got_shard, found, seconds = value
                if shard in answers:
                    continue
                if got_shard != shard or len(found) != len(q):
                    raise ShardUnavailable(f"Shard {shard} answered inconsistently; please try again shortly.")
                answers[shard] = found
                hedge_at.pop(shard, None)
                slowest = max(slowest, seconds)
                for request, (other, _, _) in list(inflight.items()):
                    if other == shard:
                        drop(request)
        finally:
            for request in list(inflight):
                drop(request)
        self._typical[len(q)] = slowest
        merged = [
            sorted((pair for s in range(self.shards) for pair in answers[s][i]), key=lambda p: (p[1], p[0]))[:k]
            for i in range(len(q))
        ]
        self.last_search = SearchStats(time.perf_counter() - started, slowest,
                                       sum(tried.values()) - self.shards)
        return merged

    def compare(self, probe: np.ndarray, subject_id: str) -> float:
        """Smallest distance between ``probe`` and the subject's templates (1:1), from the subject's shard."""
        q = as_probes(probe, self.dim)[0]
        distance = self._call_shard(shard_of(subject_id, self.shards), "compare", q, subject_id)
        if distance is None:
            raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
        return float(distance)

    def templates_of(self, subject_id: str) -> np.ndarray:
        """A copy of the templates of ``subject_id``, (M, D) float32 ((0, D) if unknown)."""
        return self._call_shard(shard_of(subject_id, self.shards), "templates_of", subject_id)

    def __contains__(self, subject_id: object) -> bool:
        if not isinstance(subject_id, str):
            return False
        return bool(self._call_shard(shard_of(subject_id, self.shards), "contains", subject_id))

    def _sizes(self) -> list[tuple[int, int]]:
        return [self._call_shard(s, "size") for s in range(self.shards)]

    def __len__(self) -> int:
        return sum(t for t, _ in self._sizes())

    @property
    def subject_count(self) -> int:
        """Number of subjects with at least one template (asked of every shard)."""
        return sum(n for _, n in self._sizes())

    # -- writes ---------------------------------------------------------------------------------------------
    def _write(self, shard: int, method: str, *args: Any) -> Any:
        """Send one write to every replica of ``shard``; the first answer, or None if no replica answered.

        Waits up to ``write_timeout`` for the first answer, then at most ``WRITE_GRACE`` for the others; when
        every replica of the shard is already marked down, or has writes whose outcome is unknown, it does not
        wait at all (a shard down must not hold up the station's change log: the erasures behind this write).

        A replica that is restarting gets the write after its reload, in order. A replica on which the write
        fails is marked down and stale: it is searched again only after it has reloaded its shard from the
        loader (which, written before the gallery, holds the write). So a write that no replica took is not
        lost and not an error: the shard's replicas all reload before they answer again, and until one has, every
        search, compare and read of the shard raises :class:`ShardUnavailable` (never a partial answer).
        """
        import ray

        refs = {}
        with self._lock:
            unusable = all(r.down_since is not None or r.unconfirmed for r in self._replicas[shard])
        for r in self._replicas[shard]:
            self._prepare(r)
            refs[getattr(r.actor, method).remote(*args)] = r
        deadline = time.monotonic() + (0.0 if unusable else self.write_timeout)
        answer, answered = None, False
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=max(deadline - time.monotonic(), 0.0))
            if not done:
                break  # its outcome is learnt later (_settle): the replica is not searched until then
            value, failure = _from_replica(partial(ray.get, done[0]))
            if failure is not None:
                self._mark_down(refs[done[0]], stale=True)
                continue
            if not answered:
                answer, answered = value, True
                deadline = min(deadline, time.monotonic() + WRITE_GRACE)
        with self._lock:
            for ref in pending:
                refs[ref].unconfirmed.append(ref)
        if not answered:
            log.warning("shard %d: no replica took a %s now; each reloads its shard before it answers again",
                        shard, method)
        return answer

    def add(self, subject_id: str, templates: np.ndarray) -> None:
        """Append one template (D,) or several (M, D) for ``subject_id`` (idempotent on its shard). A shard that
        cannot be reached does not fail it (:meth:`_write`): its replicas reload before they answer again."""
        rows = as_templates(templates, self.dim)
        if len(rows):
            self._write(shard_of(subject_id, self.shards), "add", subject_id, rows)

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> None:
        """Bulk append: row ``i`` of ``templates`` belongs to ``subject_ids[i]``; one call per shard."""
        rows = as_templates(templates, self.dim)
        ids = list(subject_ids)
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} subject ids for {len(rows)} templates")
        where = shards_of(ids, self.shards)
        for s in np.unique(where):
            pick = np.flatnonzero(where == s)
            self._write(int(s), "add_many", [ids[i] for i in pick], rows[pick])

    def remove(self, subject_id: str) -> int:
        """Remove every template of ``subject_id`` from its shard; returns how many were removed (0 also when no
        replica could be reached now: they reload from the loader, which no longer holds the subject, first)."""
        return int(self._write(shard_of(subject_id, self.shards), "remove", subject_id) or 0)

    def close(self) -> None:
        """Stop the replicas and free their placement groups (the cluster and the connection stay)."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for group in getattr(self, "_replicas", []):
            for replica in group:
                with contextlib.suppress(Exception):
                    ray.kill(replica.actor, no_restart=True)
        for pg in getattr(self, "_groups", []):
            with contextlib.suppress(Exception):
                remove_placement_group(pg)


def _from_replica(fetch: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """Run ``fetch`` (a ``ray.get`` of a call to one replica) and tell a failed replica from a failed call.

    Returns ``(value, None)`` when it answers, ``(None, exc)`` when ``fetch`` raised a replica failure
    (:func:`_is_replica_failure`: the replica died, is unreachable or restarting, or timed out): what that means
    (mark it down, stale, fail over) is the caller's. Any other exception (the replica ran the call and it
    raised: a real error) propagates.
    """
    try:
        return fetch(), None
    except Exception as exc:
        if not _is_replica_failure(exc):
            raise
        return None, exc


def _is_replica_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means the replica (its process, its node) failed, rather than the call being wrong."""
    import ray.exceptions as rex

    if isinstance(exc, ShardUnavailable):
        return True  # raised by a replica whose reload failed
    if isinstance(exc, rex.RayTaskError):
        return False  # the replica ran the call and it raised: a real error, not a lost replica
    return isinstance(exc, rex.RayError | TimeoutError)
