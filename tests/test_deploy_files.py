"""The deployment files: the Dockerfile passes hadolint and is multi-stage, slim and
non-root; compose.yaml is valid Compose and runs the documented topology; the systemd
units start each role the same way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.compose_check import problems

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).with_name("hadolint")


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /app && pip install requests\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout  # the :latest tag


def test_dockerfile_is_multi_stage_slim_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)", text, re.M)
    assert [image for image, _ in stages] == ["python:3.11-slim", "python:3.11-slim"]
    runtime = text.split("AS runtime", 1)[1]
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    assert "COPY --from=build" in runtime and "pip install" not in runtime


def test_compose_is_valid_and_runs_the_topology():
    assert problems(ROOT / "compose.yaml") == []
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]

    def count(role: str) -> int:
        return sum(
            (s.get("deploy") or {}).get("replicas", 1)
            for s in services.values()
            if s.get("command") == ["run", "--role", role]
        )

    assert (count("web"), count("worker"), count("scheduler")) == (2, 2, 1)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["caddy"]["image"].startswith("caddy:")
    assert services["migrate"]["command"] == ["migrate"]
    for name, service in services.items():
        env = service.get("environment") or {}
        if service.get("command", [""])[0] == "run":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert env["SIYU_DATABASE_URL"].startswith("postgresql://")
            assert env["SIYU_TELEGRAM_REDIS_URL"].startswith("redis://")
        for value in env.values():  # secrets come from .env, never written here
            assert "change-me" not in str(value), name


def test_compose_check_refuses_a_typo(tmp_path):
    text = (ROOT / "compose.yaml").read_text().replace("healthcheck: &ready", "helthcheck: &ready")
    bad = tmp_path / "compose.yaml"
    bad.write_text(text)
    found = problems(bad)
    assert found and any("helthcheck" in line for line in found)


def test_systemd_units_run_each_role():
    units = ROOT / "deploy" / "systemd"
    for unit, role in (
        ("siyu-web@.service", "web"),
        ("siyu-worker@.service", "worker"),
        ("siyu-scheduler.service", "scheduler"),
    ):
        text = (units / unit).read_text()
        assert f"siyu run --role {role}" in text
        assert "User=siyu" in text and "EnvironmentFile=/etc/siyu/siyu.env" in text
        assert "Requires=siyu-migrate.service" in text
    assert "siyu purge" in (units / "siyu-purge.service").read_text()
