"""docker-compose.yml and deploy/Dockerfile, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
WORKERS = ("worker-1", "worker-2")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def setting_aliases() -> set[str]:
    """Every ENGAGEMENT_* name the settings object reads."""
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        for choice in getattr(alias, "choices", [alias]):
            if isinstance(choice, str) and choice.startswith("ENGAGEMENT_"):
                names.add(choice)
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_the_stack_has_every_part() -> None:
    assert set(services()) == {
        "kafka",
        "redis",
        *WORKERS,
        "simulator",
        "prometheus",
        "grafana",
    }


@pytest.mark.parametrize("name", sorted(yaml.safe_load(COMPOSE.read_text())["services"]))
def test_every_image_is_pinned(name: str) -> None:
    image = services()[name]["image"]
    repository, sep, tag = image.rpartition(":")
    assert sep and repository and "/" not in tag, image
    assert tag != "latest" and re.match(r"^v?\d+(\.\d+)+", tag), image


def test_kafka_runs_in_kraft_mode_with_the_version_of_the_tests() -> None:
    kafka = services()["kafka"]
    env = environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in " ".join(env).lower()
    script = (ROOT / "deploy" / "kafka" / "kafka.sh").read_text()
    version = re.search(r'KAFKA_VERSION="\$\{KAFKA_VERSION:-([0-9.]+)\}"', script)
    assert version is not None
    assert kafka["image"] == f"apache/kafka:{version.group(1)}"


def test_host_ports_are_unique_and_workers_publish_the_web_port() -> None:
    seen: dict[str, str] = {}
    for name, service in services().items():
        for mapping in service.get("ports", []):
            host, _, container = str(mapping).rpartition(":")
            assert host.isdigit() and container.isdigit(), (name, mapping)
            assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
            seen[host] = name
    default_port = Settings.model_fields["web_port"].default
    for worker in WORKERS:
        (mapping,) = services()[worker]["ports"]
        assert str(mapping).endswith(f":{default_port}")


def test_environment_names_are_settings_the_worker_really_reads() -> None:
    aliases = setting_aliases()
    anchors = compose().get("x-engagement-env", {})
    named = set(anchors)
    for service in services().values():
        named |= {key for key in environment(service) if key.startswith("ENGAGEMENT_")}
    dockerfile_env = re.findall(r"\b(ENGAGEMENT_[A-Z_]+)=", DOCKERFILE.read_text())
    named |= set(dockerfile_env)
    assert named, "no ENGAGEMENT_* variable found"
    unknown = named - aliases
    assert not unknown, f"not read by streams/settings.py: {sorted(unknown)}"


def test_workers_get_the_required_secrets_and_distinct_advertised_hosts() -> None:
    advertised = set()
    for worker in WORKERS:
        env = environment(services()[worker])
        for secret in (
            "ENGAGEMENT_HOLDOUT_SALT",
            "ENGAGEMENT_ERASURE_SALT",
            "ENGAGEMENT_CLOCK_KEYS",
        ):
            # from the operator's environment, never a value written in the file
            assert env[secret].startswith("${") and ":?" in env[secret], secret
        assert env["ENGAGEMENT_BROKER"] == "kafka://kafka:9092"
        assert env["ENGAGEMENT_REDIS_URL"].startswith("redis://redis:")
        advertised.add(env["ENGAGEMENT_WEB_ADVERTISED_HOST"])
    assert advertised == set(WORKERS)


def test_mounted_paths_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_prometheus_scrapes_the_workers_and_loads_the_rules() -> None:
    prometheus = services()["prometheus"]
    (mount,) = prometheus["volumes"]
    source, target = str(mount).split(":")[:2]
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_arg.split("=", 1)[1]
    assert config_path.startswith(target + "/")
    config = yaml.safe_load((ROOT / source / config_path[len(target) + 1 :]).read_text())
    for rule_file in config["rule_files"]:
        assert (ROOT / source / rule_file).is_file()
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    port = Settings.model_fields["web_port"].default
    assert targets == {f"{worker}:{port}" for worker in WORKERS}


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = services()["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert (ROOT / "deploy/grafana/provisioning/datasources").is_dir()
    assert (ROOT / "deploy/grafana/provisioning/dashboards").is_dir()
    env = environment(grafana)
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboards_target = mounts["./deploy/grafana/dashboards"]
    assert home.startswith(dashboards_target + "/")
    assert (ROOT / "deploy/grafana/dashboards" / home[len(dashboards_target) + 1 :]).is_file()
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${")


def test_dockerfile_base_image_is_pinned_and_copies_what_exists() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert ":" in base and not base.endswith(":latest")
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for part in source.split():
            assert (ROOT / part).exists(), part
    assert re.search(r"^USER\s+(?!root)\S+", text, flags=re.MULTILINE), "runs as root"
