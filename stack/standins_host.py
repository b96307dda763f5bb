"""What a stand-in base carries from the host's apt configuration: its Debian mirror and sources
(moved to the base's suite), the keys they name, the apt settings that reach the network and the
CA bundle. Read as apt reads them: sources.list, *.list and deb822 *.sources.
"""

from __future__ import annotations

import re
from pathlib import Path

from stack.engine_state import EngineError

APT = Path("/etc/apt")


class StandInError(EngineError):
    """Said to the user as is."""


def _deb822(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
        elif line.startswith("#"):
            continue
        elif line[0].isspace() and key:
            current[key] += " " + line.strip()
        else:
            key, _, value = line.partition(":")
            current[key.strip().lower()] = value.strip()
    return stanzas


def _one_line(text: str) -> list[dict[str, str]]:
    entries = []
    for raw in text.splitlines():
        options = ""
        line = raw.split("#", 1)[0].strip()
        if match := re.match(r"^(deb|deb-src)\s+\[([^]]*)\]\s+(.*)$", line):
            kind, options, rest = match.groups()
            line = f"{kind} {rest}"
        parts = line.split()
        if len(parts) >= 3:
            entry = {"types": parts[0], "uris": parts[1], "suites": parts[2]}
            entry["components"] = " ".join(parts[3:])
            for option in options.split():
                name, _, value = option.partition("=")
                entry[name.lower()] = value
            entries.append(entry)
    return entries


def host_sources() -> list[dict[str, str]]:
    """The host's enabled `deb` sources, as apt reads them (sources.list, *.list, *.sources)."""
    entries = []
    if (APT / "sources.list").exists():
        entries += _one_line((APT / "sources.list").read_text())
    for path in sorted((APT / "sources.list.d").glob("*")):
        if path.suffix == ".list":
            entries += _one_line(path.read_text())
        elif path.suffix == ".sources":
            entries += _deb822(path.read_text())
    return [
        e
        for e in entries
        if "deb" in e.get("types", "").split() and e.get("enabled", "yes").lower() != "no"
    ]


def host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise StandInError("/etc/os-release names no VERSION_CODENAME")


def debian_sources() -> list[dict[str, str]]:
    """The host's Debian archive entries: those that carry its release or its -updates/-security."""
    codename = host_codename()
    return [
        e
        for e in host_sources()
        if any(s == codename or s.startswith(f"{codename}-") for s in e["suites"].split())
    ]


def mirror() -> str:
    codename = host_codename()
    for entry in debian_sources():
        if codename in entry["suites"].split():
            return entry["uris"].split()[0]
    raise StandInError(f"no apt source of this host carries {codename}: no mirror to debootstrap")


def sources_for(suite: str) -> str:
    """The host's Debian entries moved to another suite, in deb822 form. sid has no -updates or
    -security, and its Release files outlive their Valid-Until on archive snapshots."""
    codename = host_codename()
    stanzas = []
    for entry in debian_sources():
        suites = [s.replace(codename, suite, 1) for s in entry["suites"].split()]
        if suite == "sid":
            suites = [s for s in suites if s == "sid"]
        if not suites:
            continue
        lines = ["Types: deb", f"URIs: {entry['uris']}", f"Suites: {' '.join(suites)}"]
        lines.append(f"Components: {entry.get('components') or 'main'}")
        if entry.get("signed-by"):
            lines.append(f"Signed-By: {entry['signed-by']}")
        if suite == "sid":
            lines.append("Check-Valid-Until: no")
        stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas) + "\n"


def host_files() -> dict[Path, bytes]:
    """What a base carries from the host: keys its sources name, apt settings that reach the
    network (Acquire::: proxies, date checks), the CA bundle and the local CAs behind it."""
    files: dict[Path, bytes] = {}
    keys = [
        Path(e["signed-by"]) for e in debian_sources() if e.get("signed-by", "").startswith("/")
    ]
    for directory in (APT / "trusted.gpg.d", APT / "keyrings"):
        keys += sorted(p for p in directory.glob("*") if p.is_file()) if directory.is_dir() else []
    settings = sorted((APT / "apt.conf.d").glob("*")) if (APT / "apt.conf.d").is_dir() else []
    settings = [p for p in settings if p.is_file() and "Acquire::" in p.read_text(errors="replace")]
    local_cas = Path("/usr/local/share/ca-certificates")
    cas = sorted(p for p in local_cas.rglob("*") if p.is_file()) if local_cas.is_dir() else []
    for path in [*keys, *settings, *cas, Path("/etc/ssl/certs/ca-certificates.crt")]:
        if path.is_file():
            files[path] = path.read_bytes()
    return files
