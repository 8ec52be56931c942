"""Build what a department installs on a machine without internet: `make dist` (or `python ops/dev/dist.py --out DIR`).

DIR/credit_exchange-<version>-py3-none-any.whl and DIR/credit_exchange-<version>.tar.gz are the package;
DIR/wheels/ holds it again with every dependency as a wheel for this platform and Python version, so the
offline machine (same Debian/Ubuntu release and Python) needs nothing else:

    python3 -m venv /opt/credit-exchange/.venv
    /opt/credit-exchange/.venv/bin/pip install --no-index --find-links DIR/wheels credit-exchange

Building needs the package index (or a pip cache): run it on a connected machine of the same kind.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INSTALL = """\
Credit Exchange {version} — offline installation 离线安装
built for 适用于: Python {python}, {machine} ({platform})

As root 以 root 身份, on the department's machine 在部门前置机上:

  python3 -m venv /opt/credit-exchange/.venv
  /opt/credit-exchange/.venv/bin/pip install --no-index --find-links wheels credit-exchange
  /opt/credit-exchange/.venv/bin/cx --version

Then follow docs/node-install.md from step 2 然后按 docs/node-install.md 第 2 步继续.
SHA-256 of every file 各文件校验值: SHA256SUMS
"""


def run(*args: str) -> None:
    print("+", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (emptied first)")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT))
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' scratch folder
    wheel = next(out.glob("credit_exchange-*.whl"))
    # every dependency as a wheel (sdists are built into wheels here, so the offline machine needs no compiler)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out / "wheels"), str(wheel))
    version = wheel.name.split("-")[1]
    (out / "INSTALL.txt").write_text(INSTALL.format(version=version, python=platform.python_version(),
                                                    machine=platform.machine(), platform=platform.platform()))
    sums = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out)}"
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "SHA256SUMS"]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    wheels = sorted(p.name for p in (out / "wheels").glob("*.whl"))
    print(f"{out}: {wheel.name}, the sdist, and {len(wheels)} wheels in wheels/ (see INSTALL.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
