"""docker-compose.yml and the Dockerfile agree with the code they deploy.

Docker is not needed: the compose file is loaded with PyYAML and every relay container's
command line goes through the real argparse parser, every RELAY_* variable through the real
Settings. Each check returns a list of problems, so the negative tests at the bottom can prove
that a renamed flag or variable is caught.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from api.cli import _parser
from relay.config import Settings, SMTPOutbound, parse_outbound

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"

MAILPIT_IMAGE = "axllent/mailpit"
MAILPIT_SMTP_PORT = 1025
ONE_SHOT_RESTARTS = {None, "no", "on-failure"}

Compose = dict[str, Any]
Service = dict[str, Any]


class IsolatedSettings(Settings):
    """Settings validated from keyword arguments only, never from this process's environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


ENV_PREFIX = str(Settings.model_config.get("env_prefix", ""))
FIELDS = set(Settings.model_fields)
DEFAULTS = IsolatedSettings()


# -- loading ---------------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    return data


def console_scripts() -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return set(project.get("scripts", {}))


def dockerfile_exec(text: str, instruction: str) -> list[str] | None:
    """The last `instruction` (ENTRYPOINT/CMD) of the final stage, as an exec-form list.

    Shell form is returned as None: it runs under /bin/sh, which does not forward SIGTERM.
    """
    joined = re.sub(r"\\\n", " ", text)
    found: list[str] | None = None
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            found = None  # a new stage starts; only the final stage's settings count
        elif keyword.upper() == instruction:
            try:
                value = json.loads(rest)
            except json.JSONDecodeError:
                return None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return None
            found = value
    return found


def interpolate(value: Any) -> str | None:
    """A compose value as the container sees it, or None when it depends on the host's env.

    `${NAME:-default}` / `${NAME-default}` resolve to their default; `${NAME}`, `${NAME:?…}`
    and anything else with an unescaped `$` are unknown here.
    """
    if value is None or isinstance(value, bool):
        return None
    text = str(value)
    match = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-(.*)\}", text)
    if match:
        text = match.group(1)
    text = text.replace("$$", "\0")
    if "$" in text:
        return None
    return text.replace("\0", "$")


def environment(service: Service) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {name: (value if sep else None) for name, sep, value in pairs}
    assert isinstance(env, dict)
    return {str(k): v for k, v in env.items()}


def relay_services(compose: Compose) -> dict[str, Service]:
    """Services built from this project's Dockerfile, or running the image such a build tags."""
    services: dict[str, Service] = compose.get("services", {})
    built_images = {
        s["image"] for s in services.values() if "build" in s and isinstance(s.get("image"), str)
    }
    return {
        name: s
        for name, s in services.items()
        if _builds_this_project(s) or s.get("image") in built_images
    }


def _builds_this_project(service: Service) -> bool:
    build = service.get("build")
    if build is None:
        return False
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    root = (COMPOSE_FILE.parent / context).resolve()
    return root == ROOT and (root / dockerfile).resolve() == DOCKERFILE


def argv(service: Service, dockerfile: str) -> list[str]:
    """entrypoint + command of a service, falling back to the Dockerfile's ENTRYPOINT/CMD."""

    def as_list(value: Any) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    entry = service.get("entrypoint")
    entrypoint = as_list(entry) if entry is not None else dockerfile_exec(dockerfile, "ENTRYPOINT")
    if "command" in service:
        command = as_list(service["command"])
    elif entry is None:  # compose drops the image's CMD when it overrides the entrypoint
        command = dockerfile_exec(dockerfile, "CMD") or []
    else:
        command = []
    return [*(entrypoint or []), *command]


def parse_cli(args: list[str]) -> tuple[Any, str | None]:
    """(namespace, None) when argparse accepts `args`, else (None, argparse's message)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return _parser().parse_args(args), None
    except SystemExit:
        lines = stderr.getvalue().strip().splitlines()
        return None, lines[-1] if lines else "argparse exited"


def concrete_settings(service: Service) -> dict[str, str]:
    """{field: value} of the RELAY_* variables whose value is known from the file alone."""
    out: dict[str, str] = {}
    for name, raw in environment(service).items():
        field = name.removeprefix(ENV_PREFIX).lower()
        value = interpolate(raw)
        if name.startswith(ENV_PREFIX) and field in FIELDS and value is not None:
            out[field] = value
    return out


def effective_settings(service: Service) -> Settings:
    try:
        return IsolatedSettings.model_validate(concrete_settings(service))
    except ValidationError:
        return DEFAULTS  # reported by check_environment


def roles(service: Service, dockerfile: str) -> list[str]:
    """Roles a relay container runs: what `serve` would choose; nothing for one-shot commands."""
    args = argv(service, dockerfile)
    namespace, _ = parse_cli(args[1:])
    if namespace is None or namespace.command != "serve":
        return []
    return list(namespace.only or effective_settings(service).roles)


def container_port(spec: Any) -> int | None:
    if isinstance(spec, dict):
        target = interpolate(spec.get("target"))
        return int(target) if target and target.isdigit() else None
    text = interpolate(spec)
    if text is None:
        return None
    port = text.split("/", 1)[0].rsplit(":", 1)[-1]
    return int(port) if port.isdigit() else None


def _depends_on(service: Service) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {str(k): (v or {"condition": "service_started"}) for k, v in deps.items()}


# -- checks ----------------------------------------------------------------------------------


def check_commands(compose: Compose, dockerfile: str, scripts: set[str]) -> list[str]:
    problems = []
    for name, service in relay_services(compose).items():
        args = argv(service, dockerfile)
        if not args or args[0] not in scripts:
            problems.append(f"{name}: runs {args[:1]}, not a console script {sorted(scripts)}")
            continue
        _, error = parse_cli(args[1:])
        if error is not None:
            problems.append(f"{name}: `{shlex.join(args)}` is rejected by the CLI: {error}")
    return problems


def check_environment(compose: Compose) -> list[str]:
    problems = []
    for name, service in relay_services(compose).items():
        for var, raw in environment(service).items():
            if isinstance(raw, bool):
                problems.append(f"{name}: {var} is a YAML boolean; quote it")
            if not var.startswith(ENV_PREFIX):
                continue
            field = var.removeprefix(ENV_PREFIX).lower()
            if field not in FIELDS or var != ENV_PREFIX + field.upper():
                problems.append(f"{name}: {var} is not a setting (no Settings.{field})")
        for field, value in concrete_settings(service).items():
            try:
                IsolatedSettings.model_validate({field: value})
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                problems.append(f"{name}: {ENV_PREFIX}{field.upper()}={value!r} is invalid: {msg}")
    return problems


def check_ports(compose: Compose, dockerfile: str) -> list[str]:
    """Published container ports are exactly the ports the container's roles listen on."""
    problems = []
    for name, service in relay_services(compose).items():
        settings = effective_settings(service)
        running = roles(service, dockerfile)
        listening = {
            role: port
            for role, port in (("api", settings.http_port), ("smtp", settings.smtp_port))
            if role in running
        }
        published = [container_port(spec) for spec in service.get("ports") or []]
        if None in published:
            problems.append(f"{name}: a published port cannot be read: {service['ports']}")
        if published and set(published) - {None} != set(listening.values()):
            problems.append(
                f"{name}: publishes container ports {sorted(p for p in published if p)}, "
                f"but listens on {listening or 'nothing'}"
            )
        hosts = {"api": settings.http_host, "smtp": settings.smtp_host}
        for role in listening if published else ():
            if hosts[role] not in {"0.0.0.0", "::"}:
                problems.append(
                    f"{name}: {role} binds {hosts[role]} inside the container; "
                    "a published port cannot reach it (use 0.0.0.0)"
                )
        test = " ".join(map(str, (service.get("healthcheck") or {}).get("test") or []))
        for port in re.findall(r"https?://[^/:\s'\"]+:(\d+)/healthz", test):
            if "api" not in running or int(port) != settings.http_port:
                problems.append(
                    f"{name}: healthcheck probes port {port}, HTTP API is {listening.get('api')}"
                )
    return problems


def check_depends_on(compose: Compose) -> list[str]:
    problems = []
    services: dict[str, Service] = compose.get("services", {})
    for name, service in services.items():
        for dep, spec in _depends_on(service).items():
            target = services.get(dep)
            condition = spec.get("condition", "service_started")
            if target is None:
                problems.append(f"{name}: depends on {dep!r}, which is not a service")
                continue
            if target.get("profiles") and not service.get("profiles"):
                problems.append(f"{name}: depends on {dep!r}, which only runs under a profile")
            if condition == "service_healthy":
                check = target.get("healthcheck") or {}
                if not check.get("test") or check.get("disable"):
                    problems.append(f"{name}: waits for {dep!r} healthy; it has no healthcheck")
            elif condition == "service_completed_successfully":
                if target.get("restart") not in ONE_SHOT_RESTARTS:
                    problems.append(
                        f"{name}: waits for {dep!r} to complete, but it restarts "
                        f"{target.get('restart')!r}"
                    )
            elif condition != "service_started":
                problems.append(f"{name}: unknown depends_on condition {condition!r}")
    return problems


def check_outbound_and_database(compose: Compose, dockerfile: str) -> list[str]:
    """Outbound mail goes to the Mailpit service's SMTP port; the database URL to Postgres."""
    problems = []
    services: dict[str, Service] = compose.get("services", {})
    for name, service in relay_services(compose).items():
        settings = effective_settings(service)
        target = parse_outbound(settings.outbound)
        if not isinstance(target, SMTPOutbound):
            problems.append(f"{name}: outbound is {settings.outbound!r}, not the mail catcher")
        else:
            smarthost = services.get(target.host, {})
            if not str(smarthost.get("image", "")).startswith(MAILPIT_IMAGE):
                problems.append(f"{name}: outbound host {target.host!r} is not a Mailpit service")
            elif target.port != MAILPIT_SMTP_PORT:
                problems.append(
                    f"{name}: outbound port {target.port}, Mailpit's SMTP is {MAILPIT_SMTP_PORT}"
                )
            sends = "worker" in roles(service, dockerfile)
            if sends and not waits_for(services, name, target.host):
                problems.append(f"{name}: does not wait for its smarthost {target.host!r}")

        url = urlsplit(settings.database_url)
        if not url.scheme.startswith("postgresql+asyncpg"):
            problems.append(f"{name}: database is {settings.database_url!r}, not PostgreSQL")
            continue
        db = services.get(url.hostname or "")
        if db is None:
            problems.append(f"{name}: database host {url.hostname!r} is not a service")
            continue
        env = {k: interpolate(v) for k, v in environment(db).items()}
        user = env.get("POSTGRES_USER") or "postgres"
        expected = (user, env.get("POSTGRES_PASSWORD"), env.get("POSTGRES_DB") or user, 5432)
        actual = (url.username, url.password, url.path.lstrip("/"), url.port or 5432)
        if actual != expected:
            shown = urlunsplit(url._replace(netloc=f"{url.username}:***@{url.hostname}"))
            problems.append(f"{name}: {shown} does not match the {url.hostname} service's env")
    return problems


def waits_for(services: dict[str, Service], start: str, target: str) -> bool:
    """Whether `start` waits for `target`, directly or through its dependencies."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        deps = _depends_on(services.get(current, {}))
        if target in deps:
            return True
        stack.extend(deps)
    return False


def check_dockerfile(dockerfile: str, scripts: set[str]) -> list[str]:
    entrypoint = dockerfile_exec(dockerfile, "ENTRYPOINT")
    if entrypoint is None:
        return ["Dockerfile: ENTRYPOINT is missing or not in exec (JSON) form"]
    if entrypoint[0] not in scripts:
        return [f"Dockerfile: ENTRYPOINT {entrypoint} is not a console script {sorted(scripts)}"]
    command = dockerfile_exec(dockerfile, "CMD") or []
    _, error = parse_cli([*entrypoint[1:], *command])
    return [f"Dockerfile: default command {command} is rejected: {error}"] if error else []


def check_all(compose: Compose, dockerfile: str, scripts: set[str]) -> list[str]:
    return [
        *check_commands(compose, dockerfile, scripts),
        *check_environment(compose),
        *check_ports(compose, dockerfile),
        *check_depends_on(compose),
        *check_outbound_and_database(compose, dockerfile),
        *check_dockerfile(dockerfile, scripts),
    ]


# -- the shipped files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.fixture(scope="module")
def scripts() -> set[str]:
    return console_scripts()


def test_relay_services_are_found(compose: Compose) -> None:
    assert {"migrate", "relay", "relay-worker"} <= set(relay_services(compose))
    assert not {"postgres", "mailpit"} & set(relay_services(compose))


def test_commands_parse(compose: Compose, dockerfile: str, scripts: set[str]) -> None:
    assert check_commands(compose, dockerfile, scripts) == []


def test_environment_names_and_values(compose: Compose) -> None:
    assert check_environment(compose) == []


def test_published_ports_match_settings(compose: Compose, dockerfile: str) -> None:
    assert check_ports(compose, dockerfile) == []
    relay = relay_services(compose)["relay"]
    settings = effective_settings(relay)
    published = {container_port(p) for p in relay["ports"]}
    assert published == {settings.http_port, settings.smtp_port}


def test_depends_on(compose: Compose) -> None:
    assert check_depends_on(compose) == []
    services = compose["services"]
    assert _depends_on(services["migrate"]) == {"postgres": {"condition": "service_healthy"}}
    assert _depends_on(services["relay"]) == {
        "migrate": {"condition": "service_completed_successfully"},
        "mailpit": {"condition": "service_healthy"},
    }


def test_outbound_is_mailpit_and_database_is_postgres(compose: Compose, dockerfile: str) -> None:
    assert check_outbound_and_database(compose, dockerfile) == []


def test_dockerfile_entrypoint_is_the_console_script(dockerfile: str, scripts: set[str]) -> None:
    assert check_dockerfile(dockerfile, scripts) == []
    assert dockerfile_exec(dockerfile, "ENTRYPOINT") == ["support-relay"]


def test_service_shape(compose: Compose, dockerfile: str) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["postgres"]["volumes"]
    assert services["mailpit"]["image"].startswith(MAILPIT_IMAGE)
    assert {container_port(p) for p in services["mailpit"]["ports"]} == {8025}
    assert argv(services["migrate"], dockerfile)[1:] == ["migrate"]
    assert argv(services["relay"], dockerfile)[1] == "serve"
    assert roles(services["relay"], dockerfile) == ["api", "smtp", "worker"]
    worker = services["relay-worker"]
    assert worker["profiles"] == ["scaled"] and roles(worker, dockerfile) == ["worker"]
    assert "--no-migrate" in argv(worker, dockerfile)
    env = environment(services["relay"])
    assert env["RELAY_ADMIN_KEY"] == "${RELAY_ADMIN_KEY:-change-me}"
    assert effective_settings(services["relay"]).admin_key == "change-me"


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().split()}
    assert {".venv", "var", ".git"} <= ignored


# -- the checks catch mistakes ---------------------------------------------------------------


def _rename_env(service: Service, old: str, new: str) -> None:
    env = service["environment"] = dict(environment(service))
    env[new] = env.pop(old)


MUTATIONS: dict[str, tuple[Callable[[Compose], object], str]] = {
    "renamed flag": (
        lambda c: c["services"]["relay-worker"].update(
            command=["serve", "--only", "worker", "--skip-migrate"]
        ),
        "rejected by the CLI",
    ),
    "unknown role": (
        lambda c: c["services"]["relay-worker"].update(command=["serve", "--only", "mailer"]),
        "rejected by the CLI",
    ),
    "renamed variable": (
        lambda c: _rename_env(c["services"]["relay"], "RELAY_OUTBOUND", "RELAY_OUTBOUND_URL"),
        "RELAY_OUTBOUND_URL is not a setting",
    ),
    "invalid value": (
        lambda c: c["services"]["relay"]["environment"].update(RELAY_OUTBOUND="mailpit:1025"),
        "RELAY_OUTBOUND='mailpit:1025' is invalid",
    ),
    "port moved": (
        lambda c: c["services"]["relay"]["environment"].update(RELAY_HTTP_PORT="9090"),
        "but listens on",
    ),
    "loopback bind": (
        lambda c: c["services"]["relay"]["environment"].update(RELAY_SMTP_HOST="127.0.0.1"),
        "smtp binds 127.0.0.1",
    ),
    "outbound port": (
        lambda c: c["services"]["relay"]["environment"].update(RELAY_OUTBOUND="smtp://mailpit:25"),
        "Mailpit's SMTP is 1025",
    ),
    "missing dependency": (
        lambda c: c["services"]["relay"]["depends_on"].update(
            mailhog={"condition": "service_started"}
        ),
        "'mailhog', which is not a service",
    ),
    "worker not waiting for mailpit": (
        lambda c: c["services"]["relay-worker"]["depends_on"].pop("mailpit"),
        "relay-worker: does not wait for its smarthost 'mailpit'",
    ),
    "no healthcheck": (
        lambda c: c["services"]["mailpit"].pop("healthcheck"),
        "waits for 'mailpit' healthy; it has no healthcheck",
    ),
    "wrong password": (
        lambda c: c["services"]["postgres"]["environment"].update(POSTGRES_PASSWORD="secret"),
        "does not match the postgres service's env",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_checks_catch(mutation: str, dockerfile: str, scripts: set[str]) -> None:
    mutate, expected = MUTATIONS[mutation]
    broken = copy.deepcopy(load_compose())
    # Give every relay service its own environment mapping so one mutation touches one service.
    for service in broken["services"].values():
        if "environment" in service:
            service["environment"] = dict(environment(service))
    mutate(broken)
    problems = check_all(broken, dockerfile, scripts)
    assert any(expected in p for p in problems), problems


def test_dockerfile_check_catches_a_wrong_entrypoint(dockerfile: str, scripts: set[str]) -> None:
    renamed = dockerfile.replace('ENTRYPOINT ["support-relay"]', 'ENTRYPOINT ["relay"]')
    assert renamed != dockerfile
    assert check_dockerfile(renamed, scripts) == [
        f"Dockerfile: ENTRYPOINT ['relay'] is not a console script {sorted(scripts)}"
    ]
    shell_form = dockerfile.replace('ENTRYPOINT ["support-relay"]', "ENTRYPOINT support-relay")
    assert "exec (JSON) form" in check_dockerfile(shell_form, scripts)[0]
