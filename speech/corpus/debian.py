"""Install the Debian packages a corpus needs, as part of the command rather than a manual step."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_COMPONENTS = ("contrib", "non-free")


class DebianError(RuntimeError):
    pass


def missing(packages: list[str]) -> list[str]:
    """Packages of `packages` that dpkg does not list as installed."""
    out = []
    for pkg in packages:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False)
        if res.returncode != 0 or "install ok installed" not in res.stdout:
            out.append(pkg)
    return out


def _as_root(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return cmd
    if shutil.which("sudo"):
        return ["sudo", "-n", *cmd]
    raise DebianError(f"installing Debian packages needs root or sudo: {' '.join(cmd)}")


def add_components(sources: str) -> tuple[bool, str]:
    """Sources text with contrib and non-free added to each deb822 `Components:` and one-line `deb` entry."""
    changed = False
    lines = []
    for line in sources.splitlines():
        if line.startswith("Components:") or (line.startswith("deb ") and " main" in line):
            for comp in _COMPONENTS:
                if comp not in line.split():
                    line += f" {comp}"
                    changed = True
        lines.append(line)
    return changed, "\n".join(lines) + "\n"


def enable_contrib_non_free() -> bool:
    """Add contrib and non-free to the Debian apt sources; True when something changed."""
    files = [f for f in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")) if f.exists()]
    if not files:
        raise DebianError("no Debian apt sources found (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)")
    changed_any = False
    for path in files:
        changed, text = add_components(path.read_text())
        if changed:
            subprocess.run(_as_root(["tee", str(path)]), input=text, text=True, check=True, capture_output=True)
            changed_any = True
    return changed_any


def ensure_packages(packages: list[str], non_free: bool = False) -> list[str]:
    """Install whatever of `packages` is missing; returns what was installed."""
    todo = missing(packages)
    if not todo:
        return []
    if non_free:
        enable_contrib_non_free()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo]):
        res = subprocess.run(_as_root(cmd), env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise DebianError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-800:]}")
    still = missing(todo)
    if still:
        raise DebianError(f"apt-get reported success but these are still not installed: {still}")
    return todo
