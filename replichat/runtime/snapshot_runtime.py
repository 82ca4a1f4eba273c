"""Snapshots in the asyncio runtime: the IO of taking them off the event loop, compacting the
durable log, streaming them to followers the leader's log no longer reaches, and installing a
received one. What to do and in which order is the driver's (runtime/driver.py,
runtime/snapshots.py), shared with the simulator; this module runs the blocking steps on the
right threads and the chunked transfer over the peer transport.

The node owns one `SnapshotRuntime` and calls it at four points: after each applied batch
(`after_apply`, which may start taking a snapshot in the background when the driver says it is
due), on a Step's `snapshots_to_send` (`send_snapshots`, chunked transfers), on snapshot chunks
and acknowledgements from peers (`on_chunk`, `on_ack`), and on a Step that carries a snapshot
to install (`install`). The blocking steps and their crash-safe order are in snapshotting.py.

Driver calls made here (`snapshot_written`, `snapshot_recorded`, `snapshot_sent`) happen on the
event loop, possibly while a Ready is being persisted. That is safe: they touch only entries at
or below the applied index, which no Ready in flight persists or applies, and the progress of a
follower being sent a snapshot, which no Ready carries.
"""
import asyncio
import collections
import concurrent.futures
import logging
import os
import time
from typing import Awaitable, Callable, Deque, Dict, List, Optional, Sequence, Set, TypeVar

from replichat.chat.snapshot import (
    file_checksum, remove_snapshots_before, remove_snapshots_except, restore_state, take_snapshot,
)
from replichat.raft import membership
from replichat.raft.messages import Message, MsgType
from replichat.runtime.driver import Driver, Step
from replichat.runtime.snapshot_transfer import IncomingSnapshot, OutgoingSnapshot, SnapshotAck, SnapshotChunk
from replichat.runtime.snapshotting import compact, record, snapshot_file_name
from replichat.runtime.storage import RaftStorage
from replichat.runtime.storage import SnapshotMeta as StoredSnapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

# A transfer with no acknowledgement for this long has failed: the core will try again.
STALL_TIMEOUT_S = 10.0
# With no acknowledgement for this long, the unacknowledged chunks are sent again (the
# connection broke, or the follower restarted: it then asks for the file from the start).
RESEND_AFTER_S = 1.0
# Received chunks waiting for the transfer thread. A sender keeps at most WINDOW_CHUNKS
# unacknowledged, so a correct one never fills this; chunks beyond it are dropped (the sender
# is asked to resend from where the file stops), so a flood costs no memory.
MAX_QUEUED_CHUNKS = 16

OnThread = Callable[..., Awaitable[T]]


class SnapshotRuntime:
    def __init__(
        self,
        node_id: int,
        data_dir: str,
        state_path: str,
        storage: RaftStorage,
        driver: Callable[[], Driver],
        on_disk: Callable[..., Awaitable[object]],
        on_worker: Callable[..., Awaitable[object]],
        on_snapshot_thread: Callable[..., Awaitable[object]],
        send: Callable[[Sequence[object]], None],
        step: Callable[[List[Message]], None],
        wake: Callable[[], None],
        observer: Callable[[], object] = lambda: None,
    ) -> None:
        self.id = node_id
        self.data_dir = data_dir
        self.state_path = state_path
        self._storage = storage
        self._driver = driver
        self._on_disk = on_disk
        self._on_worker = on_worker
        self._on_snapshot_thread = on_snapshot_thread
        self._send = send
        self._step = step
        self._wake = wake
        self._observer = observer
        self._taking: Optional["asyncio.Task[None]"] = None
        self._outgoing: Dict[int, OutgoingSnapshot] = {}
        self._last_progress: Dict[int, float] = {}
        self._resent_at: Dict[int, float] = {}
        self._incoming = IncomingSnapshot(node_id, data_dir)
        # The file IO of transfers (checking a file before sending it, writing and fsyncing
        # received chunks) runs on its own thread: a follower fsyncing a large snapshot must
        # not stop its event loop, and must not hold up applies or the taking of a snapshot.
        self._transfer_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"snapshot-transfer-{node_id}")
        self._received: Deque[SnapshotChunk] = collections.deque()
        self._receiving: Optional["asyncio.Task[None]"] = None
        self._opening: Dict[int, int] = {}  # peer -> index of the transfer being opened
        self._openers: Set["asyncio.Task[None]"] = set()
        self.failure: Optional[BaseException] = None
        # The recorded snapshot (raft.db's row), kept here so the loop never reads raft.db.
        self.recorded: Optional[StoredSnapshot] = None

    async def load(self) -> Optional[StoredSnapshot]:
        """The recorded snapshot; files a crash left behind (taken or received but never
        recorded, or replaced but not yet deleted) are removed."""
        self.recorded = await self._on_disk(self._storage.snapshot)
        if self.recorded is not None:
            removed = await self._on_worker(remove_snapshots_except, self.data_dir, self.recorded.file)
            if removed:
                log.info("replica %d removed %d snapshot file(s) left over by a crash", self.id, removed)
        return self.recorded

    # ----------------------------------------------------------------- taking

    def after_apply(self) -> None:
        if self._taking is None and self._driver().snapshot_due():
            self._taking = asyncio.ensure_future(self._take())

    async def _take(self) -> None:
        driver = self._driver()
        try:
            started = time.monotonic()
            try:
                snapshot = await self._on_snapshot_thread(take_snapshot, self.state_path, self.data_dir)
            except BaseException:
                driver.snapshot_abandoned()
                raise
            meta = driver.snapshot_written(snapshot.index)
            if meta is None:
                return  # an install overtook it
            recorded = await self._on_disk(record, self._storage, snapshot, meta.term)
            to = driver.snapshot_recorded(meta)
            if to is None:
                # A snapshot from the leader was installed meanwhile (raft.db keeps the newer
                # record); its install removes this file with the rest of the older ones.
                log.info("replica %d: its snapshot at %d was overtaken by an installed one at %d",
                         self.id, snapshot.index, driver.core.snapshot.index)
                return
            self.recorded = recorded
            # The configuration at the new base goes with the compaction (the entries that
            # held it are gone): a restart takes it from there (raft/membership.py).
            base_membership = membership.encode(driver.core.base_membership)
            freed = await self._on_disk(compact, self._storage, self.data_dir, to, base_membership)
            seconds = time.monotonic() - started
            log.info(
                "replica %d took a snapshot at index %d (%.1f MiB in %.2f s); log compacted up to %d (%d entries freed)",
                self.id, snapshot.index, snapshot.size / 2**20, seconds, to, freed,
            )
            observer = self._observer()
            if observer is not None:
                observer.snapshot_taken(seconds, snapshot.size)  # type: ignore[attr-defined]
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                log.critical("replica %d could not take a snapshot", self.id, exc_info=True)
                self.failure = error
            raise
        finally:
            self._taking = None

    # ----------------------------------------------------------------- sending

    def send_snapshots(self, messages: Sequence[Message]) -> None:
        """Start a chunked transfer for each SNAPSHOT message (Step.snapshots_to_send)."""
        for m in messages:
            self._start_transfer(m)

    def _start_transfer(self, m: Message) -> None:
        previous = self._outgoing.pop(m.dst, None)
        if previous is not None:
            previous.close()
        meta = self.recorded
        if meta is None or meta.index != m.index:
            log.warning("replica %d has no snapshot file at %d for replica %d", self.id, m.index, m.dst)
            self._report(m.dst, False)
            return
        self._opening[m.dst] = meta.index
        opening = asyncio.ensure_future(self._open_transfer(m, meta))
        self._openers.add(opening)
        opening.add_done_callback(self._openers.discard)

    async def _open_transfer(self, m: Message, meta: StoredSnapshot) -> None:
        """Check the file (reading all of it: on the transfer thread) and start sending it,
        unless a newer transfer to the same peer was asked for meanwhile."""
        try:
            transfer = await self._on_transfer_thread(
                OutgoingSnapshot, self.id, m.dst, m.term, meta.index, meta.term, os.path.join(self.data_dir, meta.file),
                meta.size, meta.checksum, membership=m.context,
            )
        except Exception as error:  # the file failed its checksum: never ship it
            log.critical("replica %d cannot send snapshot %d: %s", self.id, meta.index, error)
            self.failure = error
            self._opening.pop(m.dst, None)
            self._report(m.dst, False)
            return
        if self._opening.get(m.dst) != meta.index or m.dst in self._outgoing:
            transfer.close()  # superseded while the file was being checked
            return
        del self._opening[m.dst]
        log.info("replica %d sending snapshot %d (%.1f MiB) to replica %d", self.id, meta.index, meta.size / 2**20, m.dst)
        self._outgoing[m.dst] = transfer
        self._last_progress[m.dst] = time.monotonic()
        self._send(transfer.chunks_to_send())

    def on_parts(self, parts: Sequence[object]) -> None:
        for part in parts:
            if isinstance(part, SnapshotChunk):
                self.on_chunk(part)
            elif isinstance(part, SnapshotAck):
                self.on_ack(part)

    def on_ack(self, ack: SnapshotAck) -> None:
        transfer = self._outgoing.get(ack.src)
        if transfer is None:
            return
        outcome = transfer.on_ack(ack)
        self._last_progress[ack.src] = time.monotonic()
        if outcome is None:
            self._send(transfer.chunks_to_send())
            return
        transfer.close()
        del self._outgoing[ack.src]
        if outcome:
            log.info("replica %d sent snapshot %d to replica %d", self.id, transfer.index, ack.src)
        else:
            log.warning("replica %d: replica %d refused snapshot %d: %s", self.id, ack.src, transfer.index, ack.reason)
        self._report(ack.src, outcome)

    def check_stalled(self) -> None:
        """Called every tick: resend what a quiet follower has not acknowledged, at most once
        per RESEND_AFTER_S; give a transfer up after STALL_TIMEOUT_S without any progress."""
        now = time.monotonic()
        for peer in [p for p, t in self._last_progress.items() if p in self._outgoing and now - t > STALL_TIMEOUT_S]:
            log.warning("replica %d: snapshot transfer to replica %d stalled; will retry", self.id, peer)
            self._outgoing.pop(peer).close()
            self._report(peer, False)
        for peer, transfer in self._outgoing.items():
            quiet_since = max(self._last_progress.get(peer, now), self._resent_at.get(peer, 0.0))
            if now - quiet_since > RESEND_AFTER_S:
                self._resent_at[peer] = now
                self._send(transfer.rewind())

    def _report(self, peer: int, success: bool) -> None:
        self._last_progress.pop(peer, None)
        self._resent_at.pop(peer, None)
        self._driver().snapshot_sent(peer, success)
        self._wake()

    # ----------------------------------------------------------------- receiving

    def on_chunk(self, chunk: SnapshotChunk) -> None:
        """Queue a received chunk for the transfer thread, which takes them one at a time,
        in arrival order."""
        if len(self._received) >= MAX_QUEUED_CHUNKS:
            log.warning("replica %d dropped a snapshot chunk from replica %d: %d already wait to be written",
                        self.id, chunk.src, len(self._received))
            return
        self._received.append(chunk)
        if self._receiving is None:
            self._receiving = asyncio.ensure_future(self._write_received())

    async def _write_received(self) -> None:
        try:
            while self._received:
                chunk = self._received.popleft()
                ack, name = await self._on_transfer_thread(self._incoming.accept, chunk)
                self._send([ack])
                if ack.refused:
                    log.warning("replica %d refused a snapshot chunk from replica %d: %s", self.id, chunk.src, ack.reason)
                if name is not None:
                    log.info("replica %d received snapshot %d from replica %d", self.id, chunk.index, chunk.src)
                    self._step([Message(MsgType.SNAPSHOT, chunk.src, self.id, chunk.term, log_term=chunk.snapshot_term,
                                        index=chunk.index, context=chunk.membership)])
                    self._wake()
        except Exception as error:
            # A disk that cannot take the file: the replica stops (the node checks `failure`).
            log.critical("replica %d could not write a received snapshot", self.id, exc_info=True)
            self.failure = error
            self._wake()
        finally:
            self._receiving = None

    def _on_transfer_thread(self, fn: Callable[..., T], *args: object, **kwargs: object) -> "asyncio.Future[T]":
        loop = asyncio.get_event_loop()
        return loop.run_in_executor(self._transfer_thread, lambda: fn(*args, **kwargs))

    async def install(self, step: Step, close_state: Callable[[], Awaitable[None]],
                      open_state: Callable[[], Awaitable[None]]) -> None:
        """Install the received snapshot the core accepted (Step.install), in the driver's order."""
        meta = step.install
        assert meta is not None
        driver = self._driver()
        started = time.monotonic()
        if self._taking is not None:
            # It reads state.db, which the install replaces: let it finish first (it will find
            # the install newer and record nothing).
            await asyncio.wait([self._taking])
        hs = driver.install_hard_state(step)
        name = snapshot_file_name(meta.index)
        size, checksum = await self._on_worker(file_checksum, os.path.join(self.data_dir, name))
        recorded = StoredSnapshot(meta.index, meta.term, name, size, checksum)
        # raft.db first (its own thread), then state.db: see snapshotting.install.
        await self._on_disk(self._storage.install_snapshot, recorded, hs, membership.encode(self._driver().core.base_membership))
        self.recorded = recorded
        driver.install_logged(step)
        await close_state()
        await self._on_worker(restore_state, self.state_path, os.path.join(self.data_dir, name), size, checksum, meta.index)
        await open_state()
        driver.install_restored(step)
        await self._on_worker(remove_snapshots_before, self.data_dir, meta.index)
        seconds = time.monotonic() - started
        log.info("replica %d installed snapshot %d (term %d, %.1f MiB) in %.2f s", self.id, meta.index, meta.term,
                 size / 2**20, seconds)
        observer = self._observer()
        if observer is not None:
            observer.snapshot_installed(seconds, size)  # type: ignore[attr-defined]

    async def close(self) -> None:
        for transfer in self._outgoing.values():
            transfer.close()
        self._outgoing.clear()
        self._received.clear()
        pending = [task for task in [self._receiving, *self._openers] if task is not None]
        for task in pending:
            task.cancel()
        # Their errors were logged and recorded in `failure`; only the cancellations are left.
        await asyncio.gather(*pending, return_exceptions=True)
        self._transfer_thread.shutdown(wait=True)
        self._incoming.close()
        if self._taking is not None:
            self._taking.cancel()
            try:
                await self._taking
            except BaseException:
                pass
