"""Shared fixtures: real replica processes on 127.0.0.1, stopped and (on failure) shown."""
import os
from typing import Callable, Iterator, List

import pytest

from tests.cluster import ProcessCluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture(autouse=True)
def private_credentials(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test's clients (in-process and client.py children) keep credentials in a fresh
    config directory: never the developer's own, never another test's."""
    config = str(tmp_path_factory.mktemp("xdg-config"))
    monkeypatch.setenv("XDG_CONFIG_HOME", config)
    return os.path.join(config, "replichat", "credentials.json")


@pytest.fixture
def process_cluster(tmp_path, request) -> Iterator[Callable[..., ProcessCluster]]:
    """make(replicas=5, **options) -> a started ProcessCluster; every one is killed at the end."""
    made: List[ProcessCluster] = []

    def make(replicas: int = 5, start: bool = True, **options: object) -> ProcessCluster:
        cluster = ProcessCluster(str(tmp_path / f"cluster{len(made)}"), replicas, **options)  # type: ignore[arg-type]
        made.append(cluster)
        if start:
            cluster.start_all()
        return cluster

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for cluster in made:
        cluster.close()
        if failed:
            print(cluster.logs())
