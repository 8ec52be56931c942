"""The systemd units shipped in the package, written out for one installation (`cx node|hub install-service`)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from .config import UsageError

STATE_DIR = Path("/var/lib/credit-exchange")  # the unit's StateDirectory: writable by the service
SHIPPED_CX = "/opt/credit-exchange/.venv/bin/cx"  # what the shipped units name, replaced on install


def shipped_unit(role: str) -> str:
    """The unit as shipped: `cx-node.service` or `cx-hub.service`."""
    return resources.files("cx").joinpath("systemd", f"cx-{role}.service").read_text("utf-8")


def unit_text(role: str, config: Path, *, user: str = "cx", cx: Path | None = None,
              writable: Iterable[Path] = ()) -> str:
    """The shipped unit for this installation: this cx, this configuration file, this user, these paths."""
    cx = cx or Path(sys.executable).with_name("cx")
    text = shipped_unit(role)
    text = text.replace(f"{SHIPPED_CX} {role} run --config /etc/credit-exchange/{role}.toml",
                        f"{cx} {role} run --config {config}")
    text = re.sub(r"^User=.*$", f"User={user}", text, flags=re.M)
    text = re.sub(r"^Group=.*$", f"Group={user}", text, flags=re.M)
    env = config.parent / f"{role}.env"
    text = text.replace(f"EnvironmentFile=-/etc/credit-exchange/{role}.env", f"EnvironmentFile=-{env}")
    outside = [Path(p) for p in writable if not _inside(p, STATE_DIR)]
    # a folder inside another one listed is covered by it
    extra = sorted({str(p) for p in outside if not any(q != p and _inside(p, q) for q in outside)})
    if extra:
        text = re.sub(r"^ReadWritePaths=.*$", f"ReadWritePaths={STATE_DIR} {' '.join(extra)}", text, flags=re.M)
    return text


def install_unit(role: str, config: Path, *, user: str, unit_dir: Path, print_only: bool,
                 writable: Iterable[Path] = ()) -> int:
    """Print or write `cx-<role>.service`; says what to run next, and what the unit cannot allow."""
    config = config.resolve()
    writable = list(writable)
    text = unit_text(role, config, user=user, writable=writable)
    if print_only:
        print(text, end="")
        return 0
    target = unit_dir / f"cx-{role}.service"
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
        os.chmod(target, 0o644)
    except OSError as exc:
        raise UsageError(f"无法写入 cannot write {target}: {exc.strerror} (run it as root 请以 root 身份运行, or use "
                         "--print)") from None
    print(f"wrote 已写入 {target}: runs `{Path(sys.executable).with_name('cx')} {role} run --config {config}` as user "
          f"{user}")
    hidden = [p for p in writable if _inside(p, Path("/home")) or _inside(p, Path("/root"))]
    for path in hidden:
        print(f"  note 注意: {path} is under /home or /root, which the unit hides (ProtectHome=yes): move it, or set "
              "ProtectHome=read-only and make it writable otherwise 该目录被服务隐藏")
    print("next 下一步 (as root):")
    print(f"  id {user} || useradd --system --home-dir {STATE_DIR} --shell /usr/sbin/nologin {user}")
    print(f"  chown -R {user}:{user} {config.parent}")
    print(f"  systemctl daemon-reload && systemctl enable --now cx-{role}")
    print(f"  journalctl -u cx-{role} -f")
    return 0


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except ValueError:
        return False
