"""The Raft consensus core, sans-IO.

A `RaftCore` is a plain object: the runtime (or a simulator) feeds it peer messages (`step`),
clock ticks (`tick`), client proposals (`propose`) and read requests (`read_index`), then takes
a `Ready` describing what to do — persist entries and hard state, send messages, apply committed
entries, serve reads — does it, and calls `advance(ready)`. No sockets, clocks, threads or
global randomness live here, so a seeded simulation replays a run exactly.

The contract the runtime must keep (it is what makes acknowledgements durable): the entries and
hard state of a Ready are fsynced before its messages are sent and before `advance`. The leader
counts itself toward a commit only once `advance` says its entries are durable.

Implements the extended Raft paper and Ongaro's thesis: randomized elections with pre-vote and
check-quorum (leader lease), log replication with pipelining and term-skipping back-off, the
commit rule for the leader's own term, a no-op at the start of each term, ReadIndex reads,
leadership transfer, and snapshots (§7): the runtime takes them and tells the core
(`snapshot_taken`, `compact`); a follower the leader's log no longer reaches is sent one
(a SNAPSHOT message: the runtime streams the file and reports with `report_snapshot`), and a
follower installs a snapshot only if it is newer than its commit index (`Ready.snapshot`).

Membership (raft/membership.py says why single-server changes, and the two rules a leader
keeps): the configuration in effect is the latest configuration entry in the log, committed or
not, else the one at the log's base (what the newest snapshot or compaction recorded: the
runtime passes it back at start, `base_membership`), else the bootstrap `Config.voters`.
Quorums (commit, election, check-quorum, ReadIndex) count the voters of that configuration
only; learners are replicated to and never counted. A leader that is not a voter of its own
latest configuration (its removal) keeps leading without counting itself until that entry
commits, then hands over and steps down. A member that is not a voter (a learner, or a voter
whose removal is not committed yet) may campaign, its own vote not counted, and once elected
hands over the same way; a replica outside the configuration never campaigns (`_may_campaign`
says why).

Which peers' messages the core accepts (`_refusal`), and why that is safe: messages a leader
sends (APPEND, HEARTBEAT, SNAPSHOT, TIMEOUT_NOW, READ_INDEX_RESP) and vote requests are
accepted from any replica id, member or not (thesis §4.1): a replica whose log lags may not
yet hold the entry that added today's leader, and must still take that leader's log, or it
could never catch up; and a candidate may be a voter of a configuration this replica has not
seen yet, whose vote the cluster may need. Neither is a risk: a leader's authority comes from
its term (a stale one is answered with the higher term and steps down), and a vote is at most
one per term whoever asks; what keeps a removed or not-yet-added replica from disrupting the
cluster is pre-vote (its log lacks the newer entries, so a majority refuses it) and
check-quorum (replicas that hear from a live leader ignore vote requests). Everything else
(answers to appends, votes and heartbeats, forwarded proposals and reads) is accepted only
from members of the configuration in effect: only they have a place in the leader's
bookkeeping or a vote to count. Peer identity itself is the transport's job (authenticated
connections); the core only refuses what no correct replica in its position could send.
"""
import enum
import logging
import random
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from replichat.raft import membership as conf
from replichat.raft.log import RaftLog
from replichat.raft.messages import (
    NO_LEADER,
    TRANSFER_CONTEXT,
    Entry,
    HardState,
    LogRegression,
    Message,
    MsgType,
    ReadState,
    SnapshotMeta,
)
from replichat.raft.membership import Change, Membership, MembershipError
from replichat.raft.progress import Progress, ProgressState
from replichat.raft.validate import DropCounter

log = logging.getLogger(__name__)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """A proposal could not be accepted here; `leader` is the known leader or NO_LEADER."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


# Messages accepted from any replica id, member of the configuration in effect or not (see the
# module docstring): what a leader sends, and vote requests.
_FROM_ANY_REPLICA = frozenset({
    MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT, MsgType.TIMEOUT_NOW, MsgType.READ_INDEX_RESP,
    MsgType.VOTE, MsgType.PRE_VOTE,
})


class Config(NamedTuple):
    id: int
    # The bootstrap configuration (--cluster): in effect until the log or a snapshot says
    # otherwise. A replica outside it (a new one, joining) waits to be contacted.
    voters: Tuple[int, ...]
    # In ticks. The election timeout is drawn from [election_ticks, 2 * election_ticks).
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_append: int = 512
    max_bytes_per_append: int = 1 << 20
    max_inflight: int = 32
    pre_vote: bool = True
    check_quorum: bool = True
    seed: int = 0
    # A replica that starts counts election_ticks - 1 ticks as already waited, so its first
    # timeout falls in [1, election_ticks] ticks instead of [election_ticks, 2 * election_ticks):
    # after a whole-cluster restart a leader is elected an election timeout sooner. A leader
    # that contacts it in time still resets the count, and it cannot disrupt one that exists:
    # its pre-vote is refused by every replica in its leader's lease. Only timing changes, so
    # safety does not depend on it (etcd's --initial-election-tick-advance does the same).
    advance_first_timeout: bool = False


class Ready(NamedTuple):
    hard_state: Optional[HardState]
    entries: List[Entry]
    messages: List[Message]
    committed: List[Entry]
    read_states: List[ReadState]
    # The messages promise nothing about this replica's disk, so the runtime may send them
    # while it persists (thesis §10.2.1: a leader writes its log in parallel with replicating
    # it; it counts itself toward a commit only after advance()). Otherwise: persist, then send.
    send_before_persist: bool = False
    # A snapshot from the leader to install before anything else in this Ready: persist it
    # (the log becomes empty after it), restore the state machine from it, then the rest.
    snapshot: Optional[SnapshotMeta] = None
    # Followers found to have lost acknowledged entries: the runtime logs them loudly.
    log_regressions: Tuple[LogRegression, ...] = ()


class _PendingRead(NamedTuple):
    round: int
    index: int
    context: bytes
    requester: int


class RaftCore:
    def __init__(
        self,
        config: Config,
        log: Optional[RaftLog] = None,
        hard_state: HardState = HardState(),
        snapshot: Optional[SnapshotMeta] = None,
        base_membership: Optional[Membership] = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.log = log if log is not None else RaftLog()
        # The configuration at the log's base, and every configuration entry after it.
        self._base_membership = base_membership if base_membership is not None else Membership.of_voters(config.voters)
        self._changes: List[Tuple[int, Membership]] = self._changes_in(self.log.first_index, self.log.last_index)
        self.membership = self._base_membership
        self.peers: Tuple[int, ...] = ()
        self.quorum = 1
        self._voters: frozenset = frozenset()
        self._counts_itself = False
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.log.commit_to(min(hard_state.commit, self.log.last_index))
        self._persisted = HardState(self.term, self.vote, self.log.committed)
        self._rng = random.Random(config.seed * 1_000_003 + config.id)
        self.role = Role.FOLLOWER
        self.leader = NO_LEADER
        self.progress: Dict[int, Progress] = {}
        self._votes: Dict[int, bool] = {}
        self._election_elapsed = config.election_ticks - 1 if config.advance_first_timeout else 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._draw_timeout()
        self._outbox: List[Message] = []
        self._read_states: List[ReadState] = []
        # ReadIndex on the leader: reads wait for a quorum to answer a heartbeat round sent
        # after they arrived; reads arriving before the leader committed in its term wait more.
        self._read_round = 0
        self._round_acked: Dict[int, int] = {}
        self._pending_reads: List[_PendingRead] = []
        self._reads_before_commit: List[Tuple[bytes, int]] = []
        self.transferee = NO_LEADER
        self._transfer_elapsed = 0
        # The newest snapshot this replica holds: what it sends a follower it cannot reach
        # through its log. Never older than the log's base.
        self.snapshot = snapshot if snapshot is not None else SnapshotMeta(self.log.base_index, self.log.base_term)
        if self.snapshot.index < self.log.base_index:
            raise ValueError(f"snapshot at {self.snapshot.index} is older than the log's base {self.log.base_index}")
        self._snapshot_to_install: Optional[SnapshotMeta] = None
        self._regressions: List[LogRegression] = []
        self.dropped = DropCounter()
        self._membership_changed()

    # ----------------------------------------------------------------- inputs

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._campaign_after() and self._may_campaign():
                # A replica that may not campaign keeps counting instead: its lease expires, so
                # it grants votes to the voters who need it (a promoted learner that has not
                # yet heard of its promotion can be a needed vote).
                self._election_elapsed = 0
                self.campaign()

    def _campaign_after(self) -> int:
        """Ticks without a leader before this replica campaigns. A member that is not a voter
        waits one election timeout more than a voter would: the voters get the first chance,
        so it leads (and then hands over, an extra leader change) only when they could not
        elect one (`_may_campaign`). Measured on simulator seeds 300,000-300,399 (every fault):
        without the wait a learner was elected in 94 runs (179 times), with it in 16 (16 times)."""
        if self.membership.is_voter(self.id):
            return self._randomized_timeout
        return self._randomized_timeout + self.config.election_ticks

    def campaign(self, transfer: bool = False) -> None:
        """Start an election (after a pre-vote round, unless this is a leadership transfer).
        Only a member of the configuration in effect campaigns (`_may_campaign`): a removed
        replica or one not yet added waits to be contacted by a leader."""
        if self.role is Role.LEADER or not self._may_campaign():
            return
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer)

    def _may_campaign(self) -> bool:
        """A voter or a learner of the configuration in effect, or a voter of the one before it
        while the change that removes this replica is not committed.

        The last two cases are for liveness, and all three are safe for the same reason: votes
        are counted in the candidate's configuration in effect, where a learner's or a removed
        replica's own vote does not count, exactly as for any candidate. Once elected, such a
        leader commits an entry of its term (which settles every log) and hands leadership to
        an up-to-date voter (`_step_down_if_not_voter`). Pre-vote and the lease keep it from
        disturbing a cluster that has a leader, as they do for a voter.
        - A learner can hold the newest log while no voter can win: entries of a leader that
          reached only the learner make the voters refuse each other (simulator seed 85827:
          voter 2's log promotes learner 4, so 2 needs 4's vote, which 4 refuses since its log
          is newer; voter 1 needs 2's, which 2 refuses likewise). Only the learner can be
          elected. (etcd's raft never lets a learner campaign.)
        - A leader that appends its own removal and loses its leadership before the entry
          commits holds the longest log in the same way; if the old configuration's quorum
          needs it (a voter lost for good), no one else is ever elected (seeds 1476, 2323, 2986).
        A replica whose removal is committed never campaigns: that is what stops a removed
        replica from disrupting the cluster."""
        if self.id in self._member_ids:
            return True
        if self.latest_change_index <= self.log.committed:
            return False
        before = self._changes[-2][1] if len(self._changes) >= 2 else self._base_membership
        return before.is_voter(self.id)

    def propose(self, data_items: Sequence[bytes]) -> int:
        """Append commands to the log (leader) or hand them to the leader (follower).
        Returns the last index assigned on the leader, 0 when forwarded; raises NotLeader
        when there is no leader to take them or leadership is being transferred."""
        if not data_items:
            return 0
        if any(conf.is_configuration(d) for d in data_items):
            raise ValueError("configuration changes are proposed with propose_membership, not as commands")
        if self.role is Role.LEADER:
            if self.transferee != NO_LEADER:
                raise NotLeader(NO_LEADER)
            return self._append_own(data_items)
        if self.leader == NO_LEADER:
            raise NotLeader(NO_LEADER)
        entries = tuple(Entry(0, 0, d) for d in data_items)
        self._send(Message(MsgType.PROPOSE, self.id, self.leader, self.term, entries=entries))
        return 0

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a ReadState with this context appears in a later Ready
        (or never, if leadership changes: the runtime times out and asks again)."""
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
        elif self.leader != NO_LEADER:
            self._send(Message(MsgType.READ_INDEX, self.id, self.leader, self.term, context=context))
        else:
            raise NotLeader(NO_LEADER)

    def propose_membership(self, change: Change) -> int:
        """Append the configuration that `change` makes of the one in effect (leader only);
        it takes effect here at once and on each replica as it appends it. Returns its index.
        Raises NotLeader, or MembershipError when the change does not apply or a rule of
        raft/membership.py forbids a change right now."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.transferee != NO_LEADER:
            raise NotLeader(NO_LEADER)
        reason = self._proposal_refusal()
        if reason is not None:
            raise MembershipError(reason)
        new = self.membership.apply(change)
        index = self.log.last_index + 1
        self.log.append([Entry(self.term, index, conf.encode(new))])
        self._changes.append((index, new))
        self._membership_changed()
        self._broadcast_append()
        return index

    def _proposal_refusal(self) -> Optional[str]:
        committed = self.log.committed
        return conf.check_proposal(self.latest_change_index, committed, self.log.term(committed) == self.term)

    @property
    def latest_change_index(self) -> int:
        """The index of the last configuration entry in the log (0: none since the base)."""
        return self._changes[-1][0] if self._changes else 0

    def has_configuration_between(self, first: int, last: int) -> bool:
        """Whether a configuration entry lies among log indexes first..last (after the base)."""
        return any(first <= at <= last for at, _ in self._changes)

    @property
    def base_membership(self) -> Membership:
        """The configuration in effect at the log's base: what a snapshot there must record."""
        return self._base_membership

    def membership_at(self, index: int) -> Membership:
        """The configuration in effect at log index `index` (at least the log's base)."""
        if index < self.log.base_index:
            raise AssertionError(f"the configuration at {index} is before the log's base {self.log.base_index}")
        found = self._base_membership
        for at, membership in self._changes:
            if at > index:
                break
            found = membership
        return found

    def configurations_since(self, index: int) -> List[Membership]:
        """The configuration in effect at `index` and every later one in the log (what could
        still come into effect: the ones after the commit index may yet be rolled back)."""
        return [self.membership_at(max(index, self.log.base_index))] + [m for at, m in self._changes if at > index]

    def transfer_leadership(self, target: int) -> None:
        if self.role is not Role.LEADER or target == self.id or target not in self.progress:
            return
        if target not in self._voters:
            return  # only a voter can be elected
        self.transferee = target
        self._transfer_elapsed = 0
        if self.progress[target].match == self.log.last_index:
            self._send(Message(MsgType.TIMEOUT_NOW, self.id, target, self.term))
        else:
            self._send_append(target)

    def step(self, m: Message) -> None:
        """Feed one peer message. A message that no correct peer could send in this replica's
        state is dropped and logged, never raised: the stateless checks ran already
        (raft/validate.py, in the transport); these need the core's own state. A SNAPSHOT
        never comes from the network as such: the leader's runtime streams the file, and the
        receiving runtime steps the message once it holds it (snapshot_received)."""
        if m.type is MsgType.SNAPSHOT:
            reason: Optional[str] = "a SNAPSHOT message comes only with its file, through snapshot_received"
        else:
            reason = self._refusal(m)
        if reason is not None:
            if self.dropped.record():
                log.warning("replica %d dropped a %s from replica %d (drop #%d): %s",
                            self.id, m.type.name, m.src, self.dropped.count, reason)
            return
        self._step(m)

    def snapshot_received(self, m: Message) -> None:
        """The runtime holds the whole, verified snapshot file that the leader's SNAPSHOT
        message `m` describes: step it (the core decides whether to install it)."""
        if m.type is MsgType.SNAPSHOT and self._refusal(m) is None:
            self._step(m)

    def _step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE) and self._in_lease() and m.context != TRANSFER_CONTEXT:
                # We heard from a live leader recently: a disruptive candidate (say, a replica
                # rejoining after a partition) must not depose it.
                return
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes run at a future term without adopting it
            elif m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, NO_LEADER)
        elif m.term < self.term:
            if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
                # A stale leader: our higher term in the answer makes it step down.
                self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term))
            elif m.type is MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, self.id, m.src, self.term, reject=True))
            return

        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _refusal(self, m: Message) -> Optional[str]:
        if m.dst != self.id or m.src == self.id or m.src <= 0:
            return f"addressed from {m.src} to {m.dst}, not from a peer to replica {self.id}"
        if m.src not in self._member_ids and m.type not in _FROM_ANY_REPLICA:
            # Module docstring: only members answer, forward proposals or ask for reads.
            return f"from replica {m.src}, not a member of the configuration in effect ({self.membership.describe()})"
        if m.type is MsgType.PROPOSE and any(conf.is_configuration(e.data) for e in m.entries):
            return "a configuration change forwarded as a proposal (changes are proposed at the leader)"
        if m.type is MsgType.SNAPSHOT and m.context:
            # The snapshot's configuration arrives with its file, from the peer's stream.
            if not conf.is_configuration(m.context):
                return "a snapshot whose configuration is not a configuration entry"
            problem = conf.check_entry(m.context)
            if problem is not None:
                return f"a snapshot carrying an invalid configuration: {problem}"
        if m.type is MsgType.APPEND_RESP and self.role is Role.LEADER and m.term == self.term:
            if m.index > self.log.last_index:
                # Counting it would commit entries nobody holds (and index past our log).
                return f"claims index {m.index}, past this leader's last index {self.log.last_index}"
        elif m.type is MsgType.TIMEOUT_NOW and (m.term != self.term or m.src != self.leader):
            # Only the leader hands over its leadership, and only in its own term.
            return f"TIMEOUT_NOW at term {m.term} from a replica that is not this term's leader ({self.leader})"
        return None

    # ----------------------------------------------------------------- outputs

    def has_ready(self) -> bool:
        return bool(
            self._outbox
            or self._read_states
            or self.log.stable < self.log.last_index
            or self.log.applied < self.log.committed
            or self._must_persist_hard_state()
            or self._snapshot_to_install is not None
            or self._regressions
        )

    def _must_persist_hard_state(self) -> bool:
        # Term and vote must be durable before anything that depends on them is sent. The
        # commit index need not be (a restarted replica learns it again from the leader), so
        # it rides along with other writes instead of costing an fsync of its own.
        return (self.term, self.vote) != (self._persisted.term, self._persisted.vote)

    def ready(self) -> Ready:
        entries = self.log.unstable()
        hard_state = self._hard_state()
        snapshot = self._snapshot_to_install
        persist = (
            self._must_persist_hard_state() or bool(entries or snapshot) and hard_state != self._persisted
        )
        ready = Ready(
            hard_state=hard_state if persist else None,
            entries=entries,
            messages=self._outbox,
            committed=self.log.to_apply(),
            read_states=self._read_states,
            send_before_persist=self.role is Role.LEADER and not self._must_persist_hard_state() and snapshot is None,
            snapshot=snapshot,
            log_regressions=tuple(self._regressions),
        )
        self._outbox = []
        self._read_states = []
        self._regressions = []
        return ready

    def advance(self, ready: Ready) -> None:
        """The runtime persisted `ready` and applied its committed entries."""
        if ready.hard_state is not None:
            self._persisted = ready.hard_state
        if ready.snapshot is not None and ready.snapshot == self._snapshot_to_install:
            self._snapshot_to_install = None
        if ready.entries:
            last = ready.entries[-1]
            self.log.mark_stable(last.index, last.term)
        if ready.committed:
            self.log.applied_to(ready.committed[-1].index)
        if self.role is Role.LEADER and self._maybe_commit():
            self._broadcast_append(allow_empty=True)
            self._step_down_if_not_voter()

    # ----------------------------------------------------------------- views

    @property
    def commit_index(self) -> int:
        return self.log.committed

    # ----------------------------------------------------------------- snapshots

    def snapshot_taken(self, meta: SnapshotMeta) -> None:
        """The runtime durably stored a snapshot of the applied state at meta.index."""
        if meta.index > self.log.applied:
            raise AssertionError(f"snapshot at {meta.index} is past the applied index {self.log.applied}")
        if meta.index > self.snapshot.index:
            self.snapshot = meta

    def compact(self, index: int) -> int:
        """Forget log entries up to `index` (at most the latest snapshot's index: what goes
        must be in a snapshot). Returns how many were forgotten."""
        if index > self.snapshot.index:
            raise AssertionError(f"compaction to {index} is past the latest snapshot at {self.snapshot.index}")
        if index > self.log.base_index:
            self._base_membership = self.membership_at(index)
            self._changes = [(at, m) for at, m in self._changes if at > index]
        return self.log.compact(index)

    def report_snapshot(self, peer: int, success: bool) -> None:
        """The runtime finished (or gave up) streaming a snapshot to `peer`."""
        pr = self.progress.get(peer)
        if self.role is Role.LEADER and pr is not None:
            pr.snapshot_done(success)
            self._send_append(peer, allow_empty=True)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _in_lease(self) -> bool:
        return (
            self.config.check_quorum
            and self.leader != NO_LEADER
            and self._election_elapsed < self.config.election_ticks
        )

    # ----------------------------------------------------------------- role changes

    def _draw_timeout(self) -> int:
        n = self.config.election_ticks
        return n + self._rng.randrange(n)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_LEADER
        self.leader = NO_LEADER
        self._votes = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._draw_timeout()
        self.progress = {}
        self._pending_reads = []
        self._reads_before_commit = []
        self._round_acked = {}
        self.transferee = NO_LEADER

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Term and vote stay: a pre-vote that fails leaves no trace that could disrupt anyone.
        self._votes = {}
        self.leader = NO_LEADER
        self.role = Role.PRE_CANDIDATE
        self._randomized_timeout = self._draw_timeout()
        self._request_votes(MsgType.PRE_VOTE, self.term + 1, b"")

    def _become_candidate(self, transfer: bool) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._request_votes(MsgType.VOTE, self.term, TRANSFER_CONTEXT if transfer else b"")

    def _request_votes(self, kind: MsgType, term: int, context: bytes) -> None:
        self._votes[self.id] = True
        if self._tally() is True:
            self._won_vote()
            return
        for peer in self.peers:
            if peer in self._voters:  # learners have no vote to ask for
                self._send(
                    Message(kind, self.id, peer, term, log_term=self.log.last_term, index=self.log.last_index, context=context)
                )

    def _won_vote(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._become_candidate(transfer=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        for peer in self.peers:
            self.progress[peer] = Progress(self.log.last_index + 1, self.config.max_inflight)
        # The no-op commits everything before it: entries of earlier terms are never
        # committed by counting replicas, only by a later entry of the leader's own term.
        self._append_own([b""])

    def _tally(self) -> Optional[bool]:
        voters = self._voters
        granted = sum(1 for p, v in self._votes.items() if v and p in voters)
        rejected = sum(1 for p, v in self._votes.items() if not v and p in voters)
        if granted >= self.quorum:
            return True
        if rejected >= self.quorum:
            return False
        return None

    # ----------------------------------------------------------------- per-role steps

    def _handle_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        reply = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.src
            or (self.vote == NO_LEADER and self.leader == NO_LEADER)
            or (pre and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A pre-vote grant answers at the term asked about so the candidate counts it.
            self._send(Message(reply, self.id, m.src, m.term))
            if not pre:
                self.vote = m.src
                self._election_elapsed = 0
        else:
            self._send(Message(reply, self.id, m.src, self.term, reject=True))

    def _step_candidate(self, m: Message) -> None:
        expected = MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type in (MsgType.APPEND, MsgType.HEARTBEAT, MsgType.SNAPSHOT):
            self._become_follower(self.term, m.src)
            self._step_follower(m)
        elif m.type is expected:
            self._votes[m.src] = not m.reject
            outcome = self._tally()
            if outcome is True:
                self._won_vote()
            elif outcome is False:
                self._become_follower(self.term, NO_LEADER)
        elif m.type is MsgType.PROPOSE:
            pass  # no leader to forward to: dropped, the proposer retries

    def _step_follower(self, m: Message) -> None:
        if m.type is MsgType.APPEND:
            self._election_elapsed = 0
            self.leader = m.src
            self._handle_append(m)
        elif m.type is MsgType.SNAPSHOT:
            self._election_elapsed = 0
            self.leader = m.src
            self._handle_snapshot(m)
        elif m.type is MsgType.HEARTBEAT:
            self._election_elapsed = 0
            self.leader = m.src
            self.log.commit_to(min(m.commit, self.log.last_index))
            # Our last index lets an idle leader notice a log that went back (see _step_leader).
            self._send(
                Message(MsgType.HEARTBEAT_RESP, self.id, m.src, self.term, index=self.log.last_index, context=m.context)
            )
        elif m.type is MsgType.PROPOSE:
            if self.leader != NO_LEADER:
                self._send(m._replace(src=self.id, dst=self.leader, term=self.term))
        elif m.type is MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))
        elif m.type is MsgType.TIMEOUT_NOW:
            if self.membership.is_voter(self.id):  # a learner (or a removed replica) cannot lead
                self._become_candidate(transfer=True)

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            # Everything up to our commit index is known to match: say so.
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=log.committed))
            return
        if log.has(m.index, m.log_term):
            last_new = log.merge(m.index, m.entries)
            if m.entries:
                self._log_rewritten(m.index, m.entries)
            log.commit_to(min(m.commit, last_new))
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=last_new))
            return
        # Reject with a hint that lets the leader skip a whole conflicting term (thesis §5.3).
        if m.index > log.last_index:
            hint, hint_term = log.last_index + 1, 0
        else:
            hint_term = log.term(m.index)
            hint = log.first_index_of_term(m.index)
        self._send(
            Message(
                MsgType.APPEND_RESP, self.id, m.src, self.term,
                index=m.index, reject=True, reject_hint=hint, hint_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        log = self.log
        meta = SnapshotMeta(m.index, m.log_term)
        if meta.index <= log.committed:
            # Never go back: what we have committed is at least as new. Say how far we are.
            self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=log.committed))
            return
        if log.has(meta.index, meta.term):
            # Our log already holds the snapshot's last entry, hence everything before it
            # (log matching): commit and apply it from the log instead.
            log.commit_to(meta.index)
        else:
            # The snapshot's configuration comes with it (the leader's SNAPSHOT carries it in
            # its context); none means the leader's cluster never changed its membership.
            base = conf.decode(m.context) if m.context else Membership.of_voters(self.config.voters)
            log.restore(meta.index, meta.term)
            self.snapshot = meta
            self._snapshot_to_install = meta
            self._base_membership = base
            self._changes = []
            self._membership_changed()
        self._send(Message(MsgType.APPEND_RESP, self.id, m.src, self.term, index=meta.index))

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if m.type is MsgType.PROPOSE:
            if self.transferee == NO_LEADER:
                self._append_own([e.data for e in m.entries])
            return
        if m.type is MsgType.READ_INDEX:
            self._leader_read(m.context, m.src)
            return
        if pr is None:
            return
        pr.recent_active = True
        if m.type is MsgType.APPEND_RESP:
            self._handle_append_response(m, pr)
        elif m.type is MsgType.HEARTBEAT_RESP:
            if pr.state is ProgressState.REPLICATE and pr.paused and pr.inflight:
                pr.inflight.popleft()  # an append may have been lost: make room to resend
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and not pr.inflight and m.index < pr.match:
                # The follower's log ends before what it acknowledged and no append is on its
                # way: probe, and a rejection at pr.match reports the regression.
                pr.become_probe()
                self._send_append(m.src, allow_empty=True)
            elif pr.match < self.log.last_index:
                self._send_append(m.src, allow_empty=True)
            if m.context:
                self._read_acked(m.src, int(m.context))

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            if m.hint_term:
                in_our_log = self.log.last_index_of_term(m.hint_term)
                retry_from = in_our_log + 1 if in_our_log else m.reject_hint
            else:
                retry_from = m.reject_hint
            already_regressed = pr.regressed_from is not None
            if pr.rejected(m.index, retry_from):
                if pr.regressed_from is not None and not already_regressed:
                    self._regressions.append(LogRegression(m.src, pr.regressed_from, pr.next))
                self._send_append(m.src)
            return
        was_probing = pr.state is not ProgressState.REPLICATE
        if pr.state is ProgressState.SNAPSHOT and m.index < pr.pending_snapshot:
            pr.acknowledged(m.index)  # an answer from before the install: keep waiting
            return
        if pr.acknowledged(m.index) or pr.state is ProgressState.SNAPSHOT:
            if was_probing:
                pr.become_replicate()
            if self._maybe_commit():
                self._broadcast_append(allow_empty=True)
                if self._step_down_if_not_voter():
                    return
            elif pr.next <= self.log.last_index:
                self._send_append(m.src)
            if self.transferee == m.src and pr.match == self.log.last_index:
                self._send(Message(MsgType.TIMEOUT_NOW, self.id, m.src, self.term))
        elif was_probing and pr.next <= self.log.last_index:
            self._send_append(m.src)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_active():
                # Cut off from a majority: stop accepting writes that could never commit,
                # and let the majority side elect a leader without us.
                self._become_follower(self.term, NO_LEADER)
                return
            if self.transferee != NO_LEADER:
                self.transferee = NO_LEADER  # the transfer timed out; lead on
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_active(self) -> bool:
        voters = self._voters
        active = int(self._counts_itself) + sum(1 for p, pr in self.progress.items() if pr.recent_active and p in voters)
        for pr in self.progress.values():
            pr.recent_active = False
        return active >= self.quorum

    # ----------------------------------------------------------------- replication

    def _append_own(self, data_items: Sequence[bytes]) -> int:
        first = self.log.last_index + 1
        self.log.append([Entry(self.term, first + i, d) for i, d in enumerate(data_items)])
        # A single voter commits on advance, once its own write is durable.
        self._broadcast_append()
        return self.log.last_index

    def _broadcast_append(self, allow_empty: bool = False) -> None:
        for peer in self.peers:
            self._send_append(peer, allow_empty)

    def _send_append(self, peer: int, allow_empty: bool = False) -> None:
        """Send the peer what it lacks. An empty append still goes out to probe, to carry a
        new commit index (allow_empty), or to find a lost pipelined append (the follower
        rejects the gap and the peer falls back to probing)."""
        pr = self.progress[peer]
        if pr.paused:
            return
        if pr.next <= self.log.base_index:
            # What the follower needs next was folded into a snapshot: send that instead.
            pr.become_snapshot(self.snapshot.index)
            self._send(
                Message(
                    MsgType.SNAPSHOT, self.id, peer, self.term,
                    log_term=self.snapshot.term, index=self.snapshot.index, commit=self.log.committed,
                    context=conf.encode(self.membership_at(self.snapshot.index)),
                )
            )
            return
        entries = self._batch_from(pr.next)
        if not entries and not allow_empty and pr.state is ProgressState.REPLICATE:
            return
        prev = pr.next - 1
        self._send(
            Message(
                MsgType.APPEND, self.id, peer, self.term,
                log_term=self.log.term(prev), index=prev, entries=tuple(entries), commit=self.log.committed,
            )
        )
        if entries:
            pr.sent(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True

    def _batch_from(self, start: int) -> List[Entry]:
        entries = self.log.slice(start, start + self.config.max_entries_per_append)
        budget = self.config.max_bytes_per_append
        for count, entry in enumerate(entries):
            budget -= len(entry.data)
            if budget < 0 and count > 0:
                return entries[:count]
        return entries

    def _quorum_match(self) -> int:
        """The highest index a quorum of voters holds durably (the leader counts itself only
        when it is a voter of its latest configuration, and only for what is on its disk)."""
        voters = self._voters
        matches = [pr.match for p, pr in self.progress.items() if p in voters]
        if self._counts_itself:
            matches.append(self.log.stable)
        if len(matches) < self.quorum:
            return 0
        matches.sort(reverse=True)
        return matches[self.quorum - 1]

    def _maybe_commit(self) -> bool:
        candidate = self._quorum_match()
        # Only an entry of the leader's own term commits by counting (Figure 8 of the paper).
        if candidate > self.log.committed and self.log.term(candidate) == self.term:
            self.log.commit_to(candidate)
            self._release_reads_waiting_commit()
            return True
        return False

    def _broadcast_heartbeat(self) -> None:
        context = str(self._read_round).encode() if self._pending_reads else b""
        for peer, pr in self.progress.items():
            self._send(
                Message(MsgType.HEARTBEAT, self.id, peer, self.term, commit=min(pr.match, self.log.committed), context=context)
            )

    # ----------------------------------------------------------------- ReadIndex

    def _leader_read(self, context: bytes, requester: int) -> None:
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of this term commits we do not know the true commit index.
            self._reads_before_commit.append((context, requester))
            return
        if self._counts_itself and self.quorum == 1:
            self._deliver_read(ReadState(self.log.committed, context), requester)
            return
        # Leadership must be confirmed by a heartbeat round sent after the read arrived: a round
        # already in flight may predate a newer leader. So a read joins the next round, which
        # starts now if none is in flight, else when the current one is confirmed.
        round_in_flight = bool(self._pending_reads)
        self._pending_reads.append(_PendingRead(self._read_round + 1, self.log.committed, context, requester))
        if not round_in_flight:
            self._start_read_round()

    def _start_read_round(self) -> None:
        self._read_round += 1
        self._broadcast_heartbeat()

    def _release_reads_waiting_commit(self) -> None:
        waiting, self._reads_before_commit = self._reads_before_commit, []
        for context, requester in waiting:
            self._leader_read(context, requester)

    def _read_acked(self, peer: int, round_: int) -> None:
        if round_ <= self._round_acked.get(peer, 0):
            return
        self._round_acked[peer] = round_
        self._confirm_reads()

    def _confirm_reads(self) -> None:
        """Answer the pending reads whose round a quorum of voters has acknowledged. Also run
        when the configuration changes: acknowledgements already counted may make a quorum of
        the new voters, and no new one would come for a round already acknowledged (found by
        simulator seed 13493: a removal shrank the quorum while a round waited on the removed
        voter, and every read after it waited for ever)."""
        acked = [r for p, r in self._round_acked.items() if p in self._voters]
        if self._counts_itself:
            acked.append(self._read_round)
        acked.sort(reverse=True)
        if len(acked) < self.quorum:
            return  # too few peers have answered any read round yet
        confirmed = acked[self.quorum - 1]
        ready = [r for r in self._pending_reads if r.round <= confirmed]
        if not ready:
            return
        self._pending_reads = [r for r in self._pending_reads if r.round > confirmed]
        for read in ready:
            self._deliver_read(ReadState(read.index, read.context), read.requester)
        if self._pending_reads:
            self._start_read_round()

    def _deliver_read(self, state: ReadState, requester: int) -> None:
        if requester == self.id:
            self._read_states.append(state)
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, self.id, requester, self.term, index=state.index, context=state.context))

    # ----------------------------------------------------------------- membership

    def _changes_in(self, first: int, last: int) -> List[Tuple[int, Membership]]:
        """The configuration entries among log entries first..last (validated: a bad one on
        disk stops the replica rather than being guessed at)."""
        changes = []
        for entry in self.log.slice(first, last + 1):
            if conf.is_configuration(entry.data):
                try:
                    changes.append((entry.index, conf.decode(entry.data)))
                except MembershipError as error:
                    raise MembershipError(f"log entry {entry.index} holds an invalid configuration: {error}") from None
        return changes

    def _log_rewritten(self, prev_index: int, entries: Sequence[Entry]) -> None:
        """The leader's entries after prev_index were merged into the log (truncating it at a
        conflict): configuration entries cut off no longer count, new ones do."""
        has_new = any(conf.is_configuration(e.data) for e in entries)
        if not has_new and (not self._changes or self._changes[-1][0] <= prev_index):
            return  # the common case: no configuration entry touched
        written_to = prev_index + len(entries)
        last = self.log.last_index
        kept = [(at, m) for at, m in self._changes if at <= prev_index or written_to < at <= last]
        base = self.log.base_index
        for entry in entries:
            if entry.index > base and conf.is_configuration(entry.data):
                kept.append((entry.index, conf.decode(entry.data)))
        kept.sort(key=lambda change: change[0])
        if kept != self._changes:
            self._changes = kept
            self._membership_changed()

    def _membership_changed(self) -> None:
        """The configuration in effect may have changed: recompute who counts and, on a
        leader, whom it replicates to."""
        self.membership = self._changes[-1][1] if self._changes else self._base_membership
        self._member_ids = self.membership.ids
        self.peers = tuple(sorted(self._member_ids - {self.id}))
        self._count_voters(self.membership)
        if self.role is Role.LEADER:
            for peer in self.peers:
                if peer not in self.progress:
                    # A new member: probe from our end; its rejection hint brings next back to
                    # where its log stops (an empty log: index 1, or the snapshot).
                    self.progress[peer] = Progress(self.log.last_index + 1, self.config.max_inflight)
            for peer in [p for p in self.progress if p not in self._member_ids]:
                del self.progress[peer]
                self._round_acked.pop(peer, None)
                if self.transferee == peer:
                    self.transferee = NO_LEADER
            if self._pending_reads:
                self._confirm_reads()

    def _count_voters(self, membership: Membership) -> None:
        """Whose acknowledgements and votes count, and how many make a quorum."""
        self._voters = membership.voters
        self.quorum = len(self._voters) // 2 + 1
        self._counts_itself = self.id in self._voters

    def _step_down_if_not_voter(self) -> bool:
        """A leader that is not a voter of its configuration (removed, or a learner elected
        because no voter could be) steps down once that configuration is committed (until then
        it leads without counting itself; in the learner's case that is at its first commit), handing
        leadership to an up-to-date voter so the cluster does not wait for an election timeout."""
        if self.role is not Role.LEADER or self.membership.is_voter(self.id):
            return False
        if self.latest_change_index > self.log.committed:
            return False
        for peer, pr in sorted(self.progress.items()):
            if peer in self._voters and pr.match == self.log.last_index:
                self._send(Message(MsgType.TIMEOUT_NOW, self.id, peer, self.term))
                break
        log.info("replica %d steps down: it is not a voter of its committed configuration (%s)",
                 self.id, self.membership.describe())
        self._become_follower(self.term, NO_LEADER)
        return True

    # ----------------------------------------------------------------- plumbing

    def _send(self, m: Message) -> None:
        self._outbox.append(m)

    def status(self) -> Dict[str, object]:
        return {
            "id": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader": self.leader,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last": self.log.last_index,
            "first": self.log.first_index,
            "snapshot": self.snapshot.index,
            "voters": sorted(self.membership.voters),
            "learners": sorted(self.membership.learners),
            "progress": {p: (pr.match, pr.next) for p, pr in self.progress.items()},
            "regressed": {p: pr.regressed_from for p, pr in self.progress.items() if pr.regressed_from is not None},
        }

    def voters(self) -> Set[int]:
        return set(self.membership.voters)
