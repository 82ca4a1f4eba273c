"""Deterministic simulation of a replichat cluster: the real runtime driver, the real consensus
core and the real chat state machine, with a simulated network, disk, clock and clients, all driven by one seeded
random generator, so that any failing run replays exactly from its seed.

Layout (each module one concern):

    config          what a run is: seed, replicas, steps, fault kinds, clock constants
    events          the event queue (simulated time) and the trace (hash + optional lines)
    world           what every component shares: the generator, the queue, the checker
    network         replica-to-replica links: latency, loss, duplication, delay, cuts
    disk            durable Raft log + hard state, atomically saved
    replica         one replica: the runtime's driver with simulated disk time, crashes, pauses
    serving         which simulated client waits for which answer of the driver
    requests        client <-> replica request and reply values
    clients         simulated clients: concurrent, retrying, recording their history
    nemesis         the fault injector
    invariants      Raft safety properties, checked after every event
    commands        model operations <-> log commands and answers
    chat_model      the sequential specification the history is checked against
    linearizability the history checker (also for real-process tests: check_history)
    simulation      one run: faults, then healing, liveness, final checks
    mutants         deliberately broken cores/runtimes the simulator must catch
    runner          many seeds, in parallel, with totals
    shrink          smaller failing runs from a failing one
    cli             python -m replichat.sim

Recovery after a crash is the driver's (recover_core), as in the node: the chat state database survives a process crash (so
the replica resumes from its last_applied), and a power-loss fault wipes it (so the replica
re-applies the committed log from index 1); the Raft log and hard state always survive.
"""
from replichat.sim.config import ALL_FAULTS, Fault, SimConfig
from replichat.sim.linearizability import Operation, Result, check_history
from replichat.sim.simulation import RunResult, Simulation, run

__all__ = ["ALL_FAULTS", "Fault", "Operation", "Result", "RunResult", "SimConfig", "Simulation", "check_history", "run"]
