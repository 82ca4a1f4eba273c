"""A bounded fault campaign against a real 5-replica cluster on 127.0.0.1: kill -9 (leader or
any replica), SIGSTOP/SIGCONT, and symmetric / asymmetric / isolate-one partitions through a
TCP proxy per ordered replica pair; clients record a history that is checked at the end
(exactly-once delivery of acknowledged sends, per-sender order, convergence of the replicas'
applied index, and the linearizability checker of `replichat.sim`).

    python -m replichat.chaos --seconds 30 --seed 7
"""
from replichat.chaos.campaign import CampaignResult, run_campaign
from replichat.chaos.cluster import ChaosCluster
from replichat.chaos.proxy import LinkProxy

__all__ = ["CampaignResult", "ChaosCluster", "LinkProxy", "run_campaign"]
