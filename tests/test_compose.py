"""docker-compose.yml, read statically (no Docker engine in CI): the default stack, and the
``cluster`` profile's six Redis nodes, the job that creates the cluster and the two API hosts on
it. The API hosts' URL is parsed by the settings the server reads it with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from seatlock.settings import redis_cluster_nodes

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
NODES = [f"redis-node-{n}" for n in range(1, 7)]
API_HOSTS = ["api-cluster-a", "api-cluster-b"]
INIT = "redis-cluster-init"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text())  # anchors and << merges resolved
    found: dict[str, Any] = compose["services"]
    return found


def in_profile(services: dict[str, Any], profile: str) -> set[str]:
    return {name for name, s in services.items() if profile in s.get("profiles", [])}


def test_the_default_stack_is_unchanged_and_outside_any_profile(services: dict[str, Any]) -> None:
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == {"redis", "postgres", "api"}
    assert services["api"]["environment"]["SEATLOCK_REDIS_URL"] == "redis://redis:6379/0"


def test_the_cluster_profile_has_six_nodes_an_init_job_and_two_api_hosts(
    services: dict[str, Any],
) -> None:
    assert in_profile(services, "cluster") == {*NODES, INIT, *API_HOSTS}


@pytest.mark.parametrize("node", NODES)
def test_each_node_is_a_cluster_enabled_redis_7_with_its_own_volume(
    services: dict[str, Any], node: str
) -> None:
    service = services[node]
    assert service["image"].startswith("redis:7")
    args = dict(zip(service["command"][1::2], service["command"][2::2], strict=True))
    assert args["--cluster-enabled"] == "yes"
    assert args["--notify-keyspace-events"] == "Ex"  # the expiry listener's events
    assert int(args["--cluster-node-timeout"]) <= 15_000
    # A failed primary stops its own screenings only; a node back replicates at once.
    assert args["--cluster-require-full-coverage"] == "no"
    assert args["--repl-diskless-sync-delay"] == "0"
    assert service["volumes"] == [f"{node}:/data"]
    assert service["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


@pytest.mark.parametrize("redis", ["redis", *NODES])
def test_every_redis_has_the_production_settings_of_the_embedded_one(
    services: dict[str, Any], redis: str
) -> None:
    # README, "Redis settings that matter in production": the embedded server and the compose
    # file use exactly these (seatlock/server/embedded.py; Redis 7 names the zset one listpack).
    args = dict(
        zip(services[redis]["command"][1::2], services[redis]["command"][2::2], strict=True)
    )
    assert args["--notify-keyspace-events"] == "Ex"
    assert args["--hz"] == "100"
    assert args["--active-expire-effort"] == "3"
    assert args["--zset-max-listpack-entries"] == "0"
    assert (args["--appendonly"], args["--appendfsync"]) == ("yes", "everysec")


def test_the_init_job_waits_for_every_node_and_creates_3_primaries_with_replicas(
    services: dict[str, Any],
) -> None:
    job = services[INIT]
    assert job["image"].startswith("redis:7")
    assert job["depends_on"] == {node: {"condition": "service_healthy"} for node in NODES}
    script = " ".join(job["command"])
    assert re.search(r"redis-cli --cluster create \S+ --cluster-replicas 1 --cluster-yes", script)
    assert "for n in 1 2 3 4 5 6" in script and "redis-node-$$n" in script  # $$: compose's $
    assert "cluster_state:ok" in script
    assert job["restart"] == "no"


@pytest.mark.parametrize("host", API_HOSTS)
def test_each_api_host_uses_the_cluster_and_starts_after_the_init_job(
    services: dict[str, Any], host: str
) -> None:
    service = services[host]
    env = service["environment"]
    cluster = redis_cluster_nodes(env["SEATLOCK_REDIS_URL"])
    assert cluster.nodes == tuple((node, 6379) for node in NODES[:3])  # the primaries as seeds
    assert not cluster.tls
    assert env["SEATLOCK_DATABASE_URL"] == services["api"]["environment"]["SEATLOCK_DATABASE_URL"]
    assert env["SEATLOCK_JWT_SECRET"] == services["api"]["environment"]["SEATLOCK_JWT_SECRET"]
    assert service["depends_on"][INIT] == {"condition": "service_completed_successfully"}
    assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_the_api_hosts_differ_by_port_and_data_volume_only(services: dict[str, Any]) -> None:
    a, b = (services[host] for host in API_HOSTS)
    assert {a["ports"][0], b["ports"][0]} == {"8001:8000", "8002:8000"}
    assert a["volumes"] != b["volumes"]
    shared = {k: v for k, v in a["environment"].items() if k != "SEATLOCK_PUBLIC_URL"}
    assert shared == {k: v for k, v in b["environment"].items() if k != "SEATLOCK_PUBLIC_URL"}
