"""`make dist` and the install guide's offline steps, run for real: a fresh venv, no index, only the wheel folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_node import PENALTY_STREAM, fill, penalty_row, sources

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make dist` builds (the wheel, the sdist, every dependency as a wheel), once per test session."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, str(ROOT / "ops" / "dev" / "dist.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def offline_env() -> dict[str, str]:
    """No package index, no extra find-links: only what the department carried over."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "CX_"))}
    return {**env, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def test_the_guides_offline_install_works_from_the_dist_folder(dist: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in dist.glob("credit_exchange-*")) == [
        "credit_exchange-0.1.0-py3-none-any.whl", "credit_exchange-0.1.0.tar.gz"]
    assert "--no-index --find-links wheels credit-exchange" in (dist / "INSTALL.txt").read_text()
    venv = tmp_path / "opt" / "credit-exchange" / ".venv"
    env = offline_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=300)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--find-links", str(dist / "wheels"),
                           "credit-exchange"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    cx = venv / "bin" / "cx"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(cx), *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)

    assert run("--version").stdout.startswith("credit-exchange 0.1.0")
    listed = run("validate", "--list")
    assert listed.returncode == 0 and "administrative_penalty" in listed.stdout and "行政处罚" in listed.stdout
    fields = run("validate", "--list", "--type", "administrative_penalty")
    assert "decision_date" in fields.stdout and "处罚决定日期" in fields.stdout

    # the guide's steps 2 and 5: init, describe the data, check
    etc = tmp_path / "etc" / "credit-exchange"
    init = run("node", "init", "--dept", "amr", "--dir", str(etc))
    assert init.returncode == 0, init.stderr
    url = f"sqlite:///{tmp_path / 'xzcf.db'}"
    fill(url, [penalty_row(i) for i in range(1, 6)]).dispose()
    config = etc / "node.toml"
    config.write_text(config.read_text() + sources(url) + PENALTY_STREAM.format(mode='cursor = "updated_at"',
                                                                                dept="amr"))
    check = run("node", "check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "valid 合格 5" in check.stdout and "All rows are valid" in check.stdout
    assert "no handover file yet" in check.stdout  # it does not need the hub's file yet, and says so

    # step 6: the systemd unit comes with the package
    unit = run("node", "install-service", "--config", str(config), "--print")
    assert unit.returncode == 0, unit.stderr
    assert f"ExecStart={cx} node run --config {config}" in unit.stdout and "ProtectSystem=strict" in unit.stdout
