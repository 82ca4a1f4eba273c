"""Deliberately broken cores and runtimes: the simulator's own test.

A checker that never fires proves nothing. Each mutant here reintroduces one classic Raft bug;
the tests (and `--mutant NAME` on the command line) assert the simulator catches it within a
fixed budget of seeds. They subclass the real core and change one method, so everything else
is the code under test.
"""
from typing import Callable, Dict, NamedTuple

from typing import List, Tuple

from replichat.raft.core import Config, RaftCore, Ready
from replichat.raft.log import RaftLog
from replichat.raft.messages import NO_LEADER, HardState, Message, ReadState
from replichat.runtime.driver import Driver


class CommitsEarlierTerms(RaftCore):
    """Commits by counting replicas whatever the entry's term: the Figure 8 bug of the Raft
    paper. An entry of an earlier term on a majority can still be overwritten by a leader
    whose log ends in a later term, so 'committed' entries are lost."""

    def _maybe_commit(self) -> bool:
        matches = sorted([self.log.stable] + [pr.match for pr in self.progress.values()], reverse=True)
        candidate = matches[self.quorum - 1]
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


class SendsBeforePersist(Driver):
    """The runtime sends a Ready's messages before persisting it: acknowledgements can outrun
    durability, so a crash loses entries a quorum was counted for."""

    def _split(self, ready: Ready) -> Tuple[List[Message], List[Message]]:
        return ready.messages, []


CoreFactory = Callable[[Config, RaftLog, HardState], RaftCore]
DriverFactory = Callable[..., Driver]


class Mutant(NamedTuple):
    make_core: CoreFactory
    make_driver: DriverFactory = Driver
    description: str = ""


MUTANTS: Dict[str, Mutant] = {
    "": Mutant(RaftCore, description="the real core and runtime"),
    "commit-earlier-terms": Mutant(CommitsEarlierTerms, description=CommitsEarlierTerms.__doc__ or ""),
    "forget-votes": Mutant(ForgetsVotes, description=ForgetsVotes.__doc__ or ""),
    "reads-without-quorum": Mutant(ReadsWithoutQuorum, description=ReadsWithoutQuorum.__doc__ or ""),
    "send-before-persist": Mutant(RaftCore, SendsBeforePersist, description=SendsBeforePersist.__doc__ or ""),
}


def resolve(name: str) -> Mutant:
    try:
        return MUTANTS[name]
    except KeyError:
        raise ValueError(f"unknown mutant {name!r}; known: {', '.join(n for n in MUTANTS if n)}") from None
