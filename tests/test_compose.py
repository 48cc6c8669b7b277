"""docker-compose.yml, the Dockerfile and deploy/nginx.conf name only what exists.

There is no Docker engine where the tests run, so the stack is checked by
reading it: every image, command, module, file, setting and dependency the
composed services name must exist in this repository, so that renaming a
module, a setting or an environment variable breaks a test here before it
breaks a deployment. Rejected: ``docker compose config`` (needs the Compose
plugin) and validating against the Compose JSON schema (checks shapes, not
that ``example.asgi:application`` exists).
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import os
import re
import runpy
import shlex
import sys
import urllib.parse
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from gqlws.settings import Settings, parse
from tests.processes import ROOT

COMPOSE = ROOT / "docker-compose.yml"
CLUSTER_TESTS = "tests/test_example_cluster.py"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443, "redis": 6379}


# ---- Reading the stack ------------------------------------------------------


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def command(name: str) -> list[str]:
    raw = services()[name].get("command", [])
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def option(argv: list[str], *names: str) -> str | None:
    """The value of ``-x value``, ``--long value`` or ``--long=value`` in ``argv``."""
    for index, arg in enumerate(argv):
        if arg in names and index + 1 < len(argv):
            return argv[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def environment(name: str) -> dict[str, str]:
    raw = services()[name].get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return dict(raw)


def interpolate(value: str) -> str:
    """Compose's ``${NAME:-default}`` as ``docker compose up`` sees it with nothing set."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value).replace("$$", "$")


def depends_on(name: str) -> dict[str, str]:
    raw = services()[name].get("depends_on", {})
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {target: spec.get("condition", "service_started") for target, spec in raw.items()}


def healthcheck_text(name: str) -> str:
    test = services()[name].get("healthcheck", {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def built() -> list[str]:
    """The services running the project's image."""
    return [name for name, service in services().items() if "build" in service]


def edges() -> list[str]:
    return [name for name in services() if command(name)[:1] == ["daphne"]]


def workers() -> list[str]:
    return [
        name for name in services() if command(name)[:4] == ["celery", "-A", "workers", "worker"]
    ]


def migration() -> str:
    (name,) = [name for name in services() if "migrate" in command(name)]
    return name


def load_balancer() -> str:
    (name,) = [n for n, s in services().items() if str(s.get("image", "")).startswith("nginx:")]
    return name


def cluster_tests_service() -> str:
    (name,) = [name for name in services() if "pytest" in command(name)]
    return name


def module_file(dotted: str) -> Path:
    """The file of an importable module path, from the repository root (the image's WORKDIR)."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"no module {dotted!r} in the repository (looked for {base}.py)")


def module_names(path: Path) -> set[str]:
    """The names a module binds at top level (assigned, defined or imported)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def environ_reads(path: Path) -> set[str]:
    """Variable names a module reads: ``os.environ[...]``, ``.get``, ``.setdefault``, ``getenv``.

    Not a text search: the docstring of example/settings.py names every
    variable, and would keep a renamed one "read".
    """

    def is_environ(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in {"get", "setdefault", "pop"}:
                key = node.args[0] if is_environ(func.value) else None
            elif isinstance(func, (ast.Attribute, ast.Name)) and "getenv" in ast.unparse(func):
                key = node.args[0]
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.add(key.value)
    return found


def read_by(*folders: str) -> set[str]:
    return {
        name
        for folder in folders
        for path in ROOT.glob(f"{folder}/**/*.py")
        for name in environ_reads(path)
    }


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_args(build_args: dict[str, str]) -> dict[str, str]:
    args = {}
    for instruction, rest in dockerfile():
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return {**args, **build_args}


def expand(word: str, args: dict[str, str]) -> str:
    """``${NAME}`` in a Dockerfile instruction, with the build's ARG values."""
    return re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], word)


def nginx_config() -> str:
    """The load balancer's config file, comments removed."""
    (mount,) = [v for v in services()[load_balancer()].get("volumes", []) if "nginx" in v]
    source = ROOT / mount.split(":")[0]
    assert source.is_file(), f"{load_balancer()} mounts {source}, which does not exist"
    return re.sub(r"#[^\n]*", "", source.read_text())


def listening_port(name: str) -> int:
    """The port the service's process listens on inside the compose network."""
    argv = command(name)
    image = str(services()[name].get("image", ""))
    if argv[:1] == ["daphne"]:
        return int(option(argv, "-p", "--port") or 8000)
    if argv[:1] == ["redis-server"]:
        return int(option(argv, "--port") or 6379)
    if image.startswith("postgres:"):
        return 5432
    if image.startswith("nginx:"):
        (port,) = re.findall(r"\blisten\s+(\d+)", nginx_config())
        return int(port)
    raise AssertionError(f"{name} listens on no port this test knows of")


@functools.cache
def composed_settings() -> dict[str, Any]:
    """example/settings.py evaluated with the environment the composed edges get."""
    edge = edges()[0]
    env = {key: interpolate(value) for key, value in environment(edge).items()}
    with mock.patch.dict(os.environ, env, clear=True):
        return runpy.run_path(str(module_file(env["DJANGO_SETTINGS_MODULE"])))


# ---- The services and their commands ---------------------------------------


def test_every_build_context_and_its_dockerfile_exist() -> None:
    assert built(), "no service builds the project's image"
    for name in built():
        build = services()[name]["build"]
        build = {"context": build} if isinstance(build, str) else build
        context = ROOT / build.get("context", ".")
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile_path = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile_path.is_file(), f"{name}: {dockerfile_path} does not exist"


def test_every_image_is_pinned_to_a_tag() -> None:
    images = {name: s["image"] for name, s in services().items() if "image" in s}
    for instruction, rest in dockerfile():
        if instruction == "FROM":
            images["Dockerfile"] = rest.split()[0]
    for where, image in images.items():
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{where}: image {image!r} is not pinned to a tag"


def test_two_edges_run_daphne_on_the_asgi_application_the_example_defines() -> None:
    assert len(edges()) >= 2, f"DESIGN.md wants 2+ edges, the stack has {edges()}"
    for name in edges():
        argv = command(name)
        assert option(argv, "-b", "--bind") == "0.0.0.0", f"{name} must listen beyond localhost"
        module, _, attribute = argv[-1].partition(":")
        assert attribute in module_names(module_file(module)), f"{module} defines no {attribute}"


def test_two_workers_run_the_celery_app_of_the_workers_package_on_the_gqlws_queue() -> None:
    assert len(workers()) >= 2, f"DESIGN.md wants 2+ workers, the stack has {workers()}"
    package = module_file("workers")
    declared_all = re.search(r"__all__\s*=\s*\[([^\]]*)\]", package.read_text())
    assert "app" in module_names(package), "celery -A workers needs workers.app"
    assert declared_all is None or '"app"' in declared_all.group(1)
    effective = parse(
        composed_settings().get("GQLWS"), celery_broker=composed_settings().get("CELERY_BROKER_URL")
    )
    assert effective.CELERY_QUEUE == Settings().CELERY_QUEUE
    for name in workers():
        queues = option(command(name), "-Q", "--queues")
        assert queues == effective.CELERY_QUEUE, f"{name} consumes {queues!r}"


def test_worker_healthchecks_ping_the_node_name_each_worker_takes() -> None:
    nodes = []
    for name in workers():
        hostname = services()[name].get("hostname")
        assert hostname, f"{name} needs a fixed hostname: its node name depends on it"
        node = (option(command(name), "-n", "--hostname") or "celery@%h").replace("%h", hostname)
        pinged = re.search(r"inspect ping -d (\S+)", healthcheck_text(name))
        assert pinged, f"{name}'s healthcheck is not a celery inspect ping of one node"
        assert pinged.group(1).replace("$$HOSTNAME", hostname) == node
        nodes.append(node)
    assert len(set(nodes)) == len(nodes), f"two workers share a node name: {nodes}"


def test_the_migration_runs_the_example_manage_py_once_after_postgres_is_healthy() -> None:
    name = migration()
    argv = command(name)
    assert argv[:2] == ["python", "example/manage.py"] and "--noinput" in argv
    assert (ROOT / argv[1]).is_file()
    assert str(services()[name].get("restart")) == "no", "a one-shot job must not be restarted"
    assert depends_on(name) == {"postgres": "service_healthy"}


def test_edges_and_workers_start_once_the_migration_succeeded_and_redis_is_healthy() -> None:
    for name in [*edges(), *workers()]:
        assert depends_on(name).get(migration()) == "service_completed_successfully", name
        assert depends_on(name).get("redis") == "service_healthy", name


def test_the_load_balancer_starts_once_every_edge_is_healthy() -> None:
    assert depends_on(load_balancer()) == dict.fromkeys(edges(), "service_healthy")


def test_every_dependency_names_a_service_with_a_valid_condition() -> None:
    for name in services():
        for target, condition in depends_on(name).items():
            assert target in services(), f"{name} depends on unknown service {target!r}"
            assert condition in CONDITIONS, f"{name} -> {target}: condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services()[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert str(services()[target].get("restart", "no")) == "no", target
            if not services()[name].get("profiles"):
                assert not services()[target].get("profiles"), f"{name} needs profiled {target}"


def test_redis_postgres_edges_workers_and_the_load_balancer_have_healthchecks() -> None:
    for name in ["redis", "postgres", *edges(), *workers(), load_balancer()]:
        healthcheck = services()[name].get("healthcheck", {})
        assert healthcheck.get("test") and not healthcheck.get("disable"), name
    assert "redis-cli ping" in healthcheck_text("redis")
    assert "pg_isready" in healthcheck_text("postgres")
    for name in edges():
        assert f"127.0.0.1:{listening_port(name)}/" in healthcheck_text(name), name


def test_redis_persists_an_append_only_file_and_postgres_its_data_on_named_volumes() -> None:
    argv = command("redis")
    assert option(argv, "--appendonly") == "yes", f"redis runs {argv}"
    declared = set(compose().get("volumes") or {})
    for name, path in [("redis", "/data"), ("postgres", "/var/lib/postgresql/data")]:
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services()[name].get("volumes", [])}
        assert mounts.get(path) in declared, f"{name} keeps {path} on no declared volume"


def test_every_volume_is_declared_or_a_file_of_the_repository() -> None:
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} mounts undeclared volume {source!r}"


def test_the_load_balancer_proxies_websocket_upgrades_to_every_edge_for_an_hour() -> None:
    config = nginx_config()
    upstreams = dict(re.findall(r"upstream\s+(\S+)\s*\{([^}]*)\}", config))
    (proxied,) = re.findall(r"proxy_pass\s+https?://([^/;\s]+)", config)
    assert proxied in upstreams, f"proxy_pass names {proxied!r}, not an upstream"
    servers = set(re.findall(r"\bserver\s+([\w.-]+):(\d+)", upstreams[proxied]))
    assert servers == {(name, str(listening_port(name))) for name in edges()}
    assert re.search(r"proxy_http_version\s+1\.1;", config)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", config)
    (connection,) = re.findall(r"proxy_set_header\s+Connection\s+(\S+);", config)
    upgrade_maps = re.findall(r"map\s+\$http_upgrade\s+(\$\w+)\s*\{[^}]*default\s+upgrade;", config)
    assert connection.strip("\"'").lower() == "upgrade" or connection in upgrade_maps
    (timeout,) = re.findall(r"proxy_read_timeout\s+(\d+)([smhd]?);", config)
    seconds = int(timeout[0]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[timeout[1]]
    assert seconds >= 600, f"proxy_read_timeout {seconds} s cuts quiet subscriptions"
    published = [str(p).rsplit(":", 1)[-1] for p in services()[load_balancer()].get("ports", [])]
    assert published == [str(listening_port(load_balancer()))]


# ---- The environment ---------------------------------------------------------


def test_edges_workers_and_the_migration_share_one_environment() -> None:
    reference = environment(migration())
    for name in [*edges(), *workers()]:
        assert environment(name) == reference, f"{name} sees another project than the migration"


def test_every_variable_the_project_services_set_is_one_the_project_reads() -> None:
    # Read by the example, the library, the workers; the tests service also by the tests.
    read = read_by("example", "gqlws", "broadcast", "workers")
    for name in built():
        if name == cluster_tests_service():
            continue
        unread = sorted(set(environment(name)) - read)
        assert not unread, f"{name} sets {unread}, which nothing in the project reads"


def test_every_variable_the_tests_service_sets_is_one_the_project_or_the_tests_read() -> None:
    if not (ROOT / CLUSTER_TESTS).is_file():
        pytest.skip(f"{CLUSTER_TESTS} does not exist yet: the tests service has nothing to run")
    read = read_by("example", "gqlws", "broadcast", "workers", "tests")
    unread = sorted(set(environment(cluster_tests_service())) - read)
    assert not unread, f"{cluster_tests_service()} sets {unread}, which nothing reads"


def test_environment_values_are_strings_and_every_interpolation_has_a_default() -> None:
    for name in services():
        for key, value in environment(name).items():
            assert isinstance(value, str), f"{name}: {key} is a YAML {type(value).__name__}"
    for reference in re.findall(r"\$\{[^}]*\}|\$\w+", COMPOSE.read_text().replace("$$", "")):
        assert ":-" in reference, f"{reference} has no default: `docker compose up` would need it"


def test_every_url_and_host_in_the_environment_names_a_service_on_its_port() -> None:
    for name in built():
        env = {key: interpolate(value) for key, value in environment(name).items()}
        for key, value in env.items():
            for url in value.split(","):
                parts = urllib.parse.urlsplit(url)
                if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
                    continue
                assert parts.hostname in services(), f"{name}: {key} names {parts.hostname!r}"
                port = parts.port or DEFAULT_PORTS[parts.scheme]
                assert port == listening_port(parts.hostname), f"{name}: {key}={url}"
        if "POSTGRES_HOST" in env:
            assert env["POSTGRES_HOST"] in services(), f"{name}: POSTGRES_HOST"
            assert int(env["POSTGRES_PORT"]) == listening_port(env["POSTGRES_HOST"])


def test_the_example_settings_with_the_composed_environment_use_postgres_redis_and_celery() -> None:
    settings = composed_settings()
    database = settings["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["HOST"] in services()
    credentials = {k: interpolate(v) for k, v in environment(database["HOST"]).items()}
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == (
        credentials["POSTGRES_DB"],
        credentials["POSTGRES_USER"],
        credentials["POSTGRES_PASSWORD"],
    ), "the example connects with other credentials than postgres was created with"
    gqlws_settings = parse(settings.get("GQLWS"), celery_broker=settings.get("CELERY_BROKER_URL"))
    assert gqlws_settings.distributed
    assert settings["CELERY_BROKER_URL"] != gqlws_settings.REDIS_URL, "Celery needs its own db"
    assert settings["DEBUG"] is False
    env = environment(edges()[0])
    assert settings["SECRET_KEY"] == interpolate(env["DJANGO_SECRET_KEY"])


def test_django_accepts_every_host_the_edges_are_reached_by() -> None:
    reached = {"127.0.0.1", "localhost"}  # the healthcheck; the load balancer's published port
    for name in built():
        for key, value in environment(name).items():
            if key.startswith("GQLWS_CLUSTER_"):
                reached |= {urllib.parse.urlsplit(url).hostname or "" for url in value.split(",")}
    missing = sorted(reached - set(composed_settings()["ALLOWED_HOSTS"]))
    assert not missing, f"DJANGO_ALLOWED_HOSTS lacks {missing}: Django would answer 400"


# ---- The tests service -------------------------------------------------------


def test_the_tests_service_runs_only_in_the_test_profile_after_the_whole_stack_is_healthy() -> None:
    name = cluster_tests_service()
    assert services()[name].get("profiles") == ["test"]
    others = [other for other, s in services().items() if s.get("profiles") and other != name]
    assert not others, f"`docker compose up` would leave out {others}"
    stack = {*edges(), *workers(), load_balancer()}
    assert {t for t, c in depends_on(name).items() if c == "service_healthy"} >= stack
    edge_urls = environment(name)["GQLWS_CLUSTER_EDGES"].split(",")
    assert edge_urls == [f"ws://{edge}:{listening_port(edge)}/" for edge in edges()]


def test_the_tests_service_runs_the_cluster_tests_file() -> None:
    argv = command(cluster_tests_service())
    paths = [arg for arg in argv if arg.endswith(".py")]
    assert paths == [CLUSTER_TESTS], f"the tests service runs {argv}"
    if not (ROOT / CLUSTER_TESTS).is_file():
        pytest.skip(f"{CLUSTER_TESTS} does not exist yet (being written)")
    selected = option(argv, "-k")
    if selected is not None:
        assert selected in (ROOT / CLUSTER_TESTS).read_text(), f"-k {selected} selects nothing"


# ---- The image ---------------------------------------------------------------


def test_the_dockerfile_copies_existing_files_and_installs_extras_pyproject_defines() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    builds = [services()[name]["build"] for name in built()]
    variants = [{} if isinstance(build, str) else build.get("args", {}) for build in builds]
    for build_args in variants:
        unknown = set(build_args) - set(dockerfile_args({}))
        assert not unknown, f"build args {unknown} are not ARGs of the Dockerfile"
        args = dockerfile_args(build_args)
        for instruction, rest in dockerfile():
            words = [expand(word, args) for word in shlex.split(rest)]
            if instruction == "COPY":
                for source in [w for w in words if not w.startswith("--")][:-1]:
                    assert (ROOT / source).exists(), f"COPY {source}: no such file"
            if instruction == "RUN" and "pip" in words and "install" in words:
                end = words.index("&&") if "&&" in words else len(words)
                for requirement in words[words.index("install") + 1 : end]:
                    local, _, wanted = requirement.partition("[")
                    if local in {".", "./"}:
                        assert (ROOT / "pyproject.toml").is_file()
                        missing = set(wanted.rstrip("]").split(",")) - extras
                        assert not missing, f"pip install {requirement}: no extra {missing}"


def test_the_image_runs_unprivileged_from_the_repository_root_on_the_python_path() -> None:
    instructions = dict(dockerfile())  # the last of each instruction wins, as in Docker
    assert instructions["WORKDIR"] == "/app"
    assert instructions["USER"] not in {"root", "0"}, "the processes must not run as root"
    copies = [rest.split() for instruction, rest in dockerfile() if instruction == "COPY"]
    assert [".", "."] in copies, "the whole repository (example/, tests/) must be in the image"
    assert re.search(r"PYTHONPATH=/app\b", instructions["ENV"]), "example/ is not installed"


def test_the_build_context_keeps_every_file_the_image_and_the_commands_need() -> None:
    patterns = [
        line.strip().strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = {
        "pyproject.toml",
        "README.md",
        "example/manage.py",
        "workers/__init__.py",
        str(module_file("example.asgi").relative_to(ROOT)),
        str(module_file("example.settings").relative_to(ROOT)),
        CLUSTER_TESTS,
        "tests/conftest.py",
    }
    for path in needed:
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        for pattern in patterns:
            bare = pattern.removeprefix("**/")
            hit = [p for p in prefixes if fnmatch.fnmatchcase(p, pattern)]
            hit += [
                p
                for p in prefixes
                if pattern != bare and fnmatch.fnmatchcase(p.split("/")[-1], bare)
            ]
            assert not hit, f".dockerignore pattern {pattern!r} leaves {path} out of the image"
