"""docker-compose.yml and deploy/Dockerfile, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.settings import Settings, is_loopback
from tables.errors import ConfigurationError

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
            "ENGAGEMENT_API_TOKEN",
        ):
            # from the operator's environment, never a value written in the file
            assert env[secret] == f"${{{secret}:?{REQUIRED[secret]}}}", secret
        assert env["ENGAGEMENT_BROKER"] == "kafka://kafka:9092"
        url = urlsplit(render(env["ENGAGEMENT_REDIS_URL"], DOT_ENV))
        assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
        assert url.password == DOT_ENV["REDIS_PASSWORD"]
        advertised.add(env["ENGAGEMENT_WEB_ADVERTISED_HOST"])
    assert advertised == set(WORKERS)


# `${NAME:?message}` (required) and `${NAME}`, and `$$` for a literal `$`,
# as Compose interpolates them.
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::\?([^}]*))?\}")


def strings(node: Any) -> list[str]:
    """Every string value of a loaded YAML document (comments are not values)."""
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return [node] if isinstance(node, str) else []


def required_variables() -> dict[str, str]:
    """Every ``${NAME:?message}`` of the compose file: name -> message."""
    return {
        match.group(1): match.group(2)
        for text in strings(compose())
        for match in _INTERPOLATION.finditer(text)
        if match.group(1)
    }


REQUIRED = required_variables()


def readme_dot_env() -> dict[str, str]:
    """The README's `.env`, its `$(openssl rand -hex N)` values made the same way."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("cat > .env <<EOF\n") : text.index("\nEOF\n")]
    values = {}
    for line in block.splitlines()[1:]:
        name, _, value = line.partition("=")
        generated = re.fullmatch(r"([a-z0-9]+:)?\$\(openssl rand -hex (\d+)\)", value)
        assert generated, f"{name}: not a generated value: {value}"
        values[name] = (generated.group(1) or "") + secrets.token_hex(int(generated.group(2)))
    return values


DOT_ENV = readme_dot_env()


def render(value: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        return "$" if match.group(1) is None else env[match.group(1)]

    return _INTERPOLATION.sub(substitute, value)


def test_the_readme_dot_env_sets_every_required_variable() -> None:
    assert set(DOT_ENV) == set(REQUIRED)
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_worker_of_the_stack_passes_its_own_start_checks() -> None:
    """The rendered worker environment is a valid worker configuration: secrets
    present, clock keys long enough, bound to every interface with a token."""
    for worker in WORKERS:
        env = {k: render(v, DOT_ENV) for k, v in environment(services()[worker]).items()}
        settings = Settings(**env)
        settings.require_secrets()
        settings.require_guarded_api()
        assert not is_loopback(settings.web_host)
        without_token = Settings(**{k: v for k, v in env.items() if k != "ENGAGEMENT_API_TOKEN"})
        with pytest.raises(ConfigurationError, match="ENGAGEMENT_API_TOKEN"):
            without_token.require_guarded_api()


def test_redis_requires_the_password_the_workers_send() -> None:
    redis = services()["redis"]
    assert (
        environment(redis)["REDIS_PASSWORD"] == f"${{REDIS_PASSWORD:?{REQUIRED['REDIS_PASSWORD']}}}"
    )
    command = render(" ".join(redis["command"]), DOT_ENV)
    # the container's shell expands $REDIS_PASSWORD; the image's entrypoint drops root
    assert 'exec docker-entrypoint.sh redis-server --requirepass "$REDIS_PASSWORD"' in command
    health = render(" ".join(redis["healthcheck"]["test"]), DOT_ENV)
    assert 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping' in health


def test_prometheus_sends_the_workers_token() -> None:
    prometheus = services()["prometheus"]
    (secret,) = prometheus["secrets"]
    # the secret's content is the variable the workers read their token from
    assert compose()["secrets"][secret] == {"environment": "ENGAGEMENT_API_TOKEN"}
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": f"/run/secrets/{secret}",
    }


def test_the_image_holds_no_secret_and_refuses_to_serve_without_a_token() -> None:
    text = DOCKERFILE.read_text()
    env = {
        name: value
        for line in re.findall(r"^ENV\s+(.+)$", text, flags=re.MULTILINE)
        for name, value in re.findall(r"\b(ENGAGEMENT_[A-Z_]+)=(\S+)", line)
    }
    assert env, "no ENV line found"
    secret_names = {"ENGAGEMENT_API_TOKEN", "ENGAGEMENT_CLOCK_KEYS", "ENGAGEMENT_REDIS_URL"}
    secret_names |= {name for name in setting_aliases() if "SALT" in name or "PASSWORD" in name}
    assert not secret_names & set(env), sorted(secret_names & set(env))
    with pytest.raises(ConfigurationError, match="ENGAGEMENT_API_TOKEN"):
        Settings(**env).require_guarded_api()


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


REALTIME = ROOT / "deploy" / "compose" / "realtime.yml"
# every service that runs the engagement image and so reads the ENGAGEMENT_* profile
ENGINE_SERVICES = (*WORKERS, "simulator")


def _parsed(env: dict[str, str]) -> dict[str, Any]:
    """The settings fields these variables set, as the worker parses them."""
    settings = Settings(**env)
    fields = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
    return {key: getattr(settings, fields[key]) for key in env}


def test_the_stack_runs_the_compressed_day_of_the_demo_by_default() -> None:
    from agents.stack.demo import COMPRESSED_DAY

    for name in ENGINE_SERVICES:
        env = environment(services()[name])
        profile = {key: env[key] for key in COMPRESSED_DAY if key in env}
        assert set(profile) == set(COMPRESSED_DAY), name
        assert _parsed(profile) == _parsed(dict(COMPRESSED_DAY)), name
    assert _parsed(
        {"ENGAGEMENT_DAY_MS": environment(services()["simulator"])["ENGAGEMENT_DAY_MS"]}
    ) == {"ENGAGEMENT_DAY_MS": 1000}
    command = services()["simulator"]["command"]
    poison = int(command[command.index("--poison-every") + 1])
    assert poison > 0, "the DLQ panel needs bad records"


def test_the_real_time_profile_restores_the_defaults_of_the_settings() -> None:
    from agents.stack.demo import COMPRESSED_DAY

    override: dict[str, Any] = yaml.safe_load(REALTIME.read_text())
    assert set(override["services"]) == set(ENGINE_SERVICES)
    defaults = Settings()
    fields = {str(f.validation_alias): name for name, f in Settings.model_fields.items()}
    for name, service in override["services"].items():
        env = environment(service)
        assert set(env) == set(COMPRESSED_DAY), name
        for key, value in _parsed(env).items():
            assert value == getattr(defaults, fields[key]), (name, key)
    assert f"-f {REALTIME.relative_to(ROOT)}" in COMPOSE.read_text()
