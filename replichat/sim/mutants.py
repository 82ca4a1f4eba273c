"""Deliberately broken cores and runtime drivers: the simulator's own test.

A checker that never fires proves nothing. Each mutant here reintroduces one classic Raft bug
(or, for the state machine, an authorization bug);
the tests (and `--mutant NAME` on the command line) assert the simulator catches it within a
fixed budget of seeds. They subclass the real core (or the real runtime driver, which the
asyncio node runs too) and change one method, so everything else is the code under test.
"""
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from replichat.chat.state import ChatState
from replichat.proto.command_pb2 import Command
from replichat.raft import membership as conf
from replichat.raft.core import Config, RaftCore, Ready, _PendingRead
from replichat.raft.log import RaftLog
from replichat.raft.membership import Membership
from replichat.raft.messages import NO_LEADER, Entry, HardState, Message, MsgType, ReadState, SnapshotMeta
from replichat.runtime.driver import Driver
from replichat.sim.disk import Disk


class CommitsEarlierTerms(RaftCore):
    """Commits by counting replicas whatever the entry's term: the Figure 8 bug of the Raft
    paper. An entry of an earlier term on a majority can still be overwritten by a leader
    whose log ends in a later term, so 'committed' entries are lost."""

    def _maybe_commit(self) -> bool:
        candidate = self._quorum_match()
        if candidate > self.log.committed:
            self.log.commit_to(candidate)
            self._release_reads_waiting_commit()
            return True
        return False


class ForgetsVotes(RaftCore):
    """Never makes a vote for another replica durable (only its own candidacy): after a crash
    it can vote twice in one term, so a term can get two leaders."""

    def _hard_state(self) -> HardState:
        hard_state = super()._hard_state()
        return hard_state if hard_state.vote == self.id else hard_state._replace(vote=NO_LEADER)

    def _must_persist_hard_state(self) -> bool:
        wanted = self._hard_state()
        return (wanted.term, wanted.vote) != (self._persisted.term, self._persisted.vote)


class ReadsWithoutQuorum(RaftCore):
    """Serves ReadIndex from its own commit index at once, without confirming it still leads:
    a deposed leader that has not noticed (say it was paused) serves stale reads."""

    def _leader_read(self, context: bytes, requester: int) -> None:
        self._deliver_read(ReadState(self.log.committed, context), requester)


class ReadsBeforeFirstCommit(RaftCore):
    """A new leader serves ReadIndex before an entry of its own term committed: its commit
    index may still lag what the previous leader committed (and acknowledged), so a read right
    after an election can miss an acknowledged write."""

    def _leader_read(self, context: bytes, requester: int) -> None:
        if not self.peers:
            self._deliver_read(ReadState(self.log.committed, context), requester)
            return
        round_in_flight = bool(self._pending_reads)
        self._pending_reads.append(_PendingRead(self._read_round + 1, self.log.committed, context, requester))
        if not round_in_flight:
            self._start_read_round()


class AnswersPendingReadsOnStepDown(RaftCore):
    """A leader that steps down answers the reads still waiting for their heartbeat round, at
    the index it recorded for them: a deposed leader (cut off while a newer one acknowledged
    writes) serves them from its stale state."""

    def _become_follower(self, term: int, leader: int) -> None:
        pending = list(self._pending_reads)
        super()._become_follower(term, leader)
        for read in pending:
            self._deliver_read(ReadState(read.index, read.context), read.requester)


class FixedElectionTimeout(RaftCore):
    """Draws no random election timeout: every follower waits exactly election_ticks. Replicas
    whose clocks tick together time out together, split the vote, and do it again: after a
    leader is lost the cluster takes many rounds (and terms) to elect the next one."""

    def _draw_timeout(self) -> int:
        return self.config.election_ticks


class SendsBeforePersist(Driver):
    """The runtime sends a Ready's messages before persisting it: acknowledgements can outrun
    durability, so a crash loses entries a quorum was counted for."""

    def _split(self, ready: Ready) -> Tuple[List[Message], List[Message]]:
        return ready.messages, []


class AcksBeforeFsync(Driver):
    """A follower acknowledges appended entries before they are durable (the runtime sends a
    Ready's APPEND_RESP while it persists): the leader counts a quorum that a crash can undo."""

    def _split(self, ready: Ready) -> Tuple[List[Message], List[Message]]:
        if ready.send_before_persist:
            return ready.messages, []
        acks = [m for m in ready.messages if m.type is MsgType.APPEND_RESP]
        return acks, [m for m in ready.messages if m.type is not MsgType.APPEND_RESP]


class ReadsBeforeApply(Driver):
    """Answers a linearizable read as soon as its read index is known, without waiting for
    this replica to apply up to it: a lagging follower serves state older than a write that
    was acknowledged before the read began."""

    def _may_serve(self, read_index: int, applied: int) -> bool:
        return True


class AnswersReadsOnLeaderChange(Driver):
    """When the leader changes, answers the reads still waiting for a read index with this
    replica's own commit index instead of asking the new leader: a replica that was cut off
    serves what it had, missing writes the new leader acknowledged meanwhile."""

    def _check_leader(self) -> None:
        changed = self.core.leader != self._known_leader
        super()._check_leader()
        if changed:
            for read in self._reads.values():
                if read.index is None:
                    read.index = self.core.log.committed


class UncheckedDisk(Disk):
    """Loads the log without verifying the stored checksums: an entry whose bytes changed on
    disk is taken as written, then applied, served and shipped to peers."""

    def load(self) -> Tuple[HardState, List[Entry]]:
        return self.hard_state, [Entry(term, index, data) for index, term, data, _ in self.rows()]


class SkipsPrincipalCheck(ChatState):
    """The state machine applies a command whatever its stamped principal: a principal acting
    as another user, or holding the credential of an account re-created since, acks, deletes,
    connects and sends as that user."""

    def _check_principal(self, command: Command, name: str) -> None:
        pass


class CompactsUnapplied(Driver):
    """Compacts the durable log up to its last durable entry rather than to the snapshot's index
    (less the tail) the core was compacted to: entries not yet applied, some not even
    committed, and in no snapshot, are deleted from the disk."""

    def snapshot_recorded(self, meta: SnapshotMeta) -> Optional[int]:
        if super().snapshot_recorded(meta) is None:
            return None
        return self.core.log.stable


class InstallsStaleSnapshots(RaftCore):
    """Installs any snapshot whose last entry its log does not hold, without comparing it to its
    own commit index (and past the log's own guard, which is the same rule): a snapshot that
    arrives late (delayed, duplicated, or overtaken by a newer one) takes the replica back to an
    older state than it had."""

    def _handle_snapshot(self, m: Message) -> None:
        log = self.log
        meta = SnapshotMeta(m.index, m.log_term)
        if log.has(meta.index, meta.term):
            if meta.index > log.committed:
                log.commit_to(meta.index)
        else:
            log.committed = min(log.committed, meta.index - 1)  # lets restore() go back
            log.restore(meta.index, meta.term)
            self.snapshot = meta
            self._snapshot_to_install = meta
        self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=meta.index))


class SnapshotsWithoutClients(ChatState):
    """A snapshot (and hence a restore from one) leaves out the exactly-once `clients` table: a
    replica restored from it applies a retried request a second time."""

    def copy_to(self, path: str) -> ChatState:
        copy = super().copy_to(path)
        copy._db.execute("DELETE FROM clients")
        return copy
class ConcurrentChanges(RaftCore):
    """Proposes a configuration change while the previous one is still uncommitted: two
    single-server steps in flight add up to a two-server change, whose old and new majorities
    need not intersect, so two leaders can be elected in one term."""

    def _proposal_refusal(self) -> Optional[str]:
        committed = self.log.committed
        return conf.check_proposal(0, committed, self.log.term(committed) == self.term)


class ChangesBeforeTermCommit(RaftCore):
    """Proposes a configuration change before committing an entry of its own term (the bug
    of the thesis's single-server algorithm fixed in 2015): an uncommitted change of an
    earlier leader can be overwritten after this one was built on top of another."""

    def _proposal_refusal(self) -> Optional[str]:
        return conf.check_proposal(self.latest_change_index, self.log.committed, True)


class OldConfigurationQuorum(RaftCore):
    """Counts the voters of the latest configuration but takes the quorum's size from the
    configuration before it: once a fourth voter is added, two of four make a "majority", and
    the two halves of a partition can both commit."""

    def _count_voters(self, membership: Membership) -> None:
        super()._count_voters(membership)
        changes = self._changes
        if changes and changes[-1][1] == membership:
            previous = changes[-2][1] if len(changes) >= 2 else self._base_membership
            self.quorum = previous.quorum


class LearnerCountsAsVoter(RaftCore):
    """Counts learners' acknowledgements and votes toward the voters' quorum: an entry on a
    minority of voters plus a learner is taken as committed."""

    def _count_voters(self, membership: Membership) -> None:
        super()._count_voters(membership)
        self._voters = membership.ids
        self._counts_itself = self.id in membership.ids


CoreFactory = Callable[[Config, RaftLog, HardState], RaftCore]
DriverFactory = Callable[..., Driver]


class Mutant(NamedTuple):
    make_core: CoreFactory
    make_driver: DriverFactory = Driver
    make_disk: Callable[[], Disk] = Disk
    make_state: Callable[[str], ChatState] = ChatState
    description: str = ""


MUTANTS: Dict[str, Mutant] = {
    "": Mutant(RaftCore, description="the real core and runtime"),
    "commit-earlier-terms": Mutant(CommitsEarlierTerms, description=CommitsEarlierTerms.__doc__ or ""),
    "forget-votes": Mutant(ForgetsVotes, description=ForgetsVotes.__doc__ or ""),
    "reads-without-quorum": Mutant(ReadsWithoutQuorum, description=ReadsWithoutQuorum.__doc__ or ""),
    "reads-before-first-commit": Mutant(ReadsBeforeFirstCommit, description=ReadsBeforeFirstCommit.__doc__ or ""),
    "pending-reads-answered-on-step-down": Mutant(
        AnswersPendingReadsOnStepDown, description=AnswersPendingReadsOnStepDown.__doc__ or ""
    ),
    "no-election-randomization": Mutant(FixedElectionTimeout, description=FixedElectionTimeout.__doc__ or ""),
    "send-before-persist": Mutant(RaftCore, SendsBeforePersist, description=SendsBeforePersist.__doc__ or ""),
    "ack-before-fsync": Mutant(RaftCore, AcksBeforeFsync, description=AcksBeforeFsync.__doc__ or ""),
    "read-before-apply": Mutant(RaftCore, ReadsBeforeApply, description=ReadsBeforeApply.__doc__ or ""),
    "reads-answered-on-leader-change": Mutant(
        RaftCore, AnswersReadsOnLeaderChange, description=AnswersReadsOnLeaderChange.__doc__ or ""
    ),
    "unchecked-disk": Mutant(RaftCore, make_disk=UncheckedDisk, description=UncheckedDisk.__doc__ or ""),
    "skip-principal-check": Mutant(RaftCore, make_state=SkipsPrincipalCheck, description=SkipsPrincipalCheck.__doc__ or ""),
    # Snapshots (issue 10).
    "compact-unapplied": Mutant(RaftCore, CompactsUnapplied, description=CompactsUnapplied.__doc__ or ""),
    "install-stale-snapshot": Mutant(InstallsStaleSnapshots, description=InstallsStaleSnapshots.__doc__ or ""),
    "snapshot-without-clients": Mutant(
        RaftCore, make_state=SnapshotsWithoutClients, description=SnapshotsWithoutClients.__doc__ or ""
    ),
    "concurrent-changes": Mutant(ConcurrentChanges, description=ConcurrentChanges.__doc__ or ""),
    "change-before-term-commit": Mutant(ChangesBeforeTermCommit, description=ChangesBeforeTermCommit.__doc__ or ""),
    "old-configuration-quorum": Mutant(OldConfigurationQuorum, description=OldConfigurationQuorum.__doc__ or ""),
    "learner-counts-as-voter": Mutant(LearnerCountsAsVoter, description=LearnerCountsAsVoter.__doc__ or ""),
}


def resolve(name: str) -> Mutant:
    try:
        return MUTANTS[name]
    except KeyError:
        raise ValueError(f"unknown mutant {name!r}; known: {', '.join(n for n in MUTANTS if n)}") from None
