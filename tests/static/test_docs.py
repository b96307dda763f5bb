"""The documents against the repository, so they cannot drift unnoticed.

- docs/CONTRACT.md names every field of `app.config.Settings` with its environment variable and
  its true default, the native ports of `stack.topology`, and every variable of `.env.example`;
- the README's layout tree names only paths that exist (and are not git-ignored), and every
  top-level folder the repository tracks;
- every relative link in README.md, docs/ and loadtest/README.md reaches a file (and a heading,
  when it names one), and every repository path written in backticks exists;
- the README stays within 12,000 bytes.

Each check is a function of a document's text, so the tests below also feed it doctored text and
expect the report: a check that cannot fail proves nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from app.config import Settings
from stack.paths import REPO_ROOT
from stack.topology import API_BASE_PORT, PORTS

README = REPO_ROOT / "README.md"
CONTRACT = REPO_ROOT / "docs" / "CONTRACT.md"
DOCUMENTS = sorted(
    [README, REPO_ROOT / "loadtest" / "README.md", *(REPO_ROOT / "docs").rglob("*.md")]
)
README_LIMIT = 12_000
SETTINGS_HEADING = "## API settings (`app.config.Settings`)"
PORTS_HEADING = "## Native ports"
LAYOUT_HEADING = "## Layout"

FENCED = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A repository path in backticks: word characters, dots, dashes and globs, with at least one "/".
PATH_SPAN = re.compile(r"[\w.-]+(?:/[\w.*-]+)*/?")


# --- tables -------------------------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """The text under `heading`, up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    if heading not in lines:
        raise LookupError(f"no heading {heading!r}")
    start = lines.index(heading) + 1
    level = len(heading) - len(heading.lstrip("#"))
    body = []
    for line in lines[start:]:
        hashes = len(line) - len(line.lstrip("#"))
        if 0 < hashes <= level and line[hashes : hashes + 1] == " ":
            break
        body.append(line)
    return "\n".join(body)


def table_rows(text: str, heading: str) -> dict[str, list[str]]:
    """The first table under `heading`, keyed by its first cell (its code span, if any)."""
    rows = [line for line in section(text, heading).splitlines() if line.startswith("|")]
    if len(rows) < 2:
        raise LookupError(f"no table under {heading!r}")
    table = {}
    for row in rows[2:]:  # the header and the |---| line
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        table[code_or_text(cells[0])] = cells[1:]
    return table


def code_or_text(cell: str) -> str:
    match = CODE_SPAN.search(cell)
    return match.group(1) if match else cell.strip()


def compare(
    documented: Mapping[str, list[str]],
    expected: Mapping[str, Any],
    check: Callable[[str, Any], str | None],
    what: str,
) -> list[str]:
    problems = [f"{name}: missing" for name in expected if name not in documented]
    problems += [f"{name}: not {what}" for name in documented if name not in expected]
    for name, value in expected.items():
        if name in documented:
            problem = check(code_or_text(documented[name][0]), value)
            if problem:
                problems.append(f"{name}: {problem}")
    return problems


# --- settings -----------------------------------------------------------------------------------


def env_var(field_name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field_name}".upper()


def default_problem(stated: str, field: FieldInfo) -> str | None:
    """None when `stated` means the field's default: a value, "unset" (None) or "empty" ("")."""
    if field.default_factory is not None:
        name = f"{getattr(field.default_factory, '__name__', 'factory')}()"
        return None if stated == name else f"states {stated!r}, the default is {name}"
    default, annotation = field.default, field.annotation
    assert annotation is not None, "every setting is annotated"
    if stated in ("unset", "empty"):
        value: Any = None if stated == "unset" else ""
    else:
        try:
            value = TypeAdapter(annotation).validate_python(stated)
        except ValidationError:
            return f"states {stated!r}, not a valid value"
    plain = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in (value, default)]
    return None if plain[0] == plain[1] else f"states {stated!r}, the default is {plain[1]!r}"


def settings_problems(text: str) -> list[str]:
    expected = {env_var(name): field for name, field in Settings.model_fields.items()}
    documented = table_rows(text, SETTINGS_HEADING)
    return compare(documented, expected, default_problem, "a setting of app.config.Settings")


def ports_problems(text: str) -> list[str]:
    expected = dict([*PORTS.values(), API_BASE_PORT])
    documented = table_rows(text, PORTS_HEADING)

    def check(stated: str, port: int) -> str | None:
        return None if stated == str(port) else f"states {stated!r}, the default is {port}"

    return compare(documented, expected, check, "a port of stack.topology")


def env_example_keys() -> list[str]:
    lines = (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    return [line.partition("=")[0] for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line)]


# --- the layout tree ----------------------------------------------------------------------------


def layout_entries(text: str) -> list[str]:
    """Paths of the README's layout tree: one name a line, nested two spaces per level."""
    block = FENCED.search(section(text, LAYOUT_HEADING))
    if block is None:
        raise LookupError(f"no code block under {LAYOUT_HEADING!r}")
    folders: list[str] = []
    paths = []
    for line in block.group(0).splitlines()[1:-1]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        level, odd = divmod(indent, 2)
        if odd or level > len(folders):
            raise ValueError(f"layout line not nested under a folder: {line!r}")
        path = (folders[level - 1] if level else "") + line.split()[0]
        folders[level:] = [path] if path.endswith("/") else []
        paths.append(path)
    return paths


def git(*args: str) -> list[str]:
    result = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    # check-ignore exits 1 when nothing is ignored; anything else above 1 is an error.
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.splitlines()


def tracked_top_level() -> tuple[set[str], set[str]]:
    """(folders, files) at the top of the repository, as git tracks them."""
    names = git("ls-files")
    folders = {name.split("/", 1)[0] + "/" for name in names if "/" in name}
    return folders, {name for name in names if "/" not in name}


def missing(paths: list[str]) -> list[str]:
    """Paths that do not exist as written: a trailing "/" means a folder, "*" a glob."""
    absent = []
    for path in paths:
        found = list(REPO_ROOT.glob(path.rstrip("/"))) if "*" in path else [REPO_ROOT / path]
        if not any(p.is_dir() if path.endswith("/") else p.exists() for p in found):
            absent.append(path)
    return absent


def ignored(paths: list[str]) -> set[str]:
    """The paths git ignores (a trailing "/" lets git match folder patterns that do not exist)."""
    return {path.rstrip("/") for path in git("check-ignore", "--", *paths)} if paths else set()


def layout_problems(text: str) -> list[str]:
    """Top-level folders missing from the tree, then its paths that are absent or ignored."""
    paths = layout_entries(text)
    folders, _ = tracked_top_level()
    top = {path for path in paths if "/" not in path.rstrip("/")}
    problems = [f"{folder}: tracked top-level folder missing" for folder in sorted(folders - top)]
    problems += [f"{path}: does not exist" for path in missing(paths)]
    ignored_paths = ignored(paths)
    return problems + [f"{p}: ignored by git" for p in paths if p.rstrip("/") in ignored_paths]


def named_path_problems(text: str) -> list[str]:
    """Named paths that do not exist, unless git ignores them (outputs such as bench/results/)."""
    paths = named_paths(text)
    ignored_paths = ignored(paths)
    return [f"{p}: does not exist" for p in missing(paths) if p.rstrip("/") not in ignored_paths]


# --- links and paths ----------------------------------------------------------------------------


def prose(text: str) -> str:
    """The text without fenced code blocks (commands and pictures, not references)."""
    return FENCED.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; GitHub numbers repeats: `name`, `name-1`, `name-2`."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose(text).splitlines():
        match = re.match(r"#{1,6} +(.*)", line)
        if match:
            base = slug(match.group(1))
            count = counts.get(base, 0)
            counts[base] = count + 1
            found.add(f"{base}-{count}" if count else base)
    return found


def link_problems(text: str, folder: Path) -> list[str]:
    problems = []
    for target in LINK.findall(CODE_SPAN.sub("code", prose(text))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        resolved = (folder / path).resolve() if path else None
        if resolved is not None and not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor and (resolved is None or resolved.suffix == ".md"):
            headings = anchors(resolved.read_text(encoding="utf-8") if resolved else text)
            if anchor not in headings:
                problems.append(f"{target}: no heading #{anchor}")
    return problems


def named_paths(text: str) -> list[str]:
    """Repository paths written in backticks outside code blocks, e.g. `services/api/app/`."""
    folders, files = tracked_top_level()
    tops = {folder.rstrip("/") for folder in folders} | files
    spans = (span.strip() for span in CODE_SPAN.findall(prose(text)))
    return sorted({
        span for span in spans
        if "/" in span and PATH_SPAN.fullmatch(span) and span.split("/", 1)[0] in tops
    })  # fmt: skip


# --- the real documents -------------------------------------------------------------------------


def test_every_setting_is_documented_with_its_true_default() -> None:
    assert settings_problems(CONTRACT.read_text(encoding="utf-8")) == []


def test_the_native_ports_are_those_of_the_topology() -> None:
    assert ports_problems(CONTRACT.read_text(encoding="utf-8")) == []


def test_every_variable_of_the_example_env_is_documented() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    missing = [key for key in env_example_keys() if f"`{key}`" not in text]
    assert missing == [], f"in .env.example but not in docs/CONTRACT.md: {missing}"


def test_the_readme_layout_tree_is_true() -> None:
    assert layout_problems(README.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    assert link_problems(document.read_text(encoding="utf-8"), document.parent) == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_named_paths_exist(document: Path) -> None:
    assert named_path_problems(document.read_text(encoding="utf-8")) == []


def test_the_readme_stays_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move the detail into docs/"


# --- the checks can fail --------------------------------------------------------------------------


def test_a_drifted_settings_table_is_reported() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    doctored = (
        text.replace("| `API_HOST` | `127.0.0.1` |", "| `API_HOST` | `0.0.0.0` |")
        .replace("| `DB_POOL_SIZE` | `10` |", "| `DB_POOL_SIZE` | ten |")
        .replace("| `POSTGRES_PASSWORD` | empty |", "| `POSTGRES_PASSWORD` | unset |")
        .replace("| `REPLICA_NAME` | `gethostname()` |", "| `REPLICA_NAME` | `api` |")
    )
    doctored = re.sub(r"^\| `CACHE_RETRY_AFTER_SECONDS` .*\n", "", doctored, flags=re.MULTILINE)
    doctored = doctored.replace(
        "| `API_PORT` |", "| `API_WORKERS` | `1` | not a setting |\n| `API_PORT` |"
    )
    problems = settings_problems(doctored)
    assert len(problems) == 6, problems
    for expected in (
        "API_HOST: states '0.0.0.0', the default is '127.0.0.1'",
        "DB_POOL_SIZE: states 'ten', not a valid value",
        "POSTGRES_PASSWORD: states 'unset', the default is ''",
        "REPLICA_NAME: states 'api', the default is gethostname()",
        "CACHE_RETRY_AFTER_SECONDS: missing",
        "API_WORKERS: not a setting of app.config.Settings",
    ):
        assert expected in problems


def test_a_drifted_ports_table_is_reported() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    doctored = re.sub(r"^\| `NATIVE_REDIS_PORT` .*\n", "", text, flags=re.MULTILINE)
    doctored = doctored.replace(
        "| `NATIVE_POSTGRES_PORT` | `15432` |", "| `NATIVE_POSTGRES_PORT` | `5432` |"
    )
    assert ports_problems(doctored) == [
        "NATIVE_REDIS_PORT: missing",
        "NATIVE_POSTGRES_PORT: states '5432', the default is 15432",
    ]


def test_a_wrong_layout_tree_is_reported() -> None:
    text = README.read_text(encoding="utf-8")
    assert ".ci/" in tracked_top_level()[0]
    doctored = re.sub(r"^\.ci/ .*\n(  .*\n)*", "", text, count=1, flags=re.MULTILINE)
    doctored = doctored.replace("  paths.py ", "  nowhere.py  a module that is gone\n  paths.py ")
    doctored = doctored.replace("\ndocs/ ", "\ndocs/README.md  a file, not the folder\ndocs/ ")
    assert layout_problems(doctored) == [
        ".ci/: tracked top-level folder missing",
        "docs/README.md: does not exist",
        "stack/nowhere.py: does not exist",
    ]


def test_a_layout_line_nested_under_a_file_is_refused() -> None:
    text = f"{LAYOUT_HEADING}\n\n```\nMakefile  the commands\n  help  not a folder\n```\n"
    with pytest.raises(ValueError, match="not nested under a folder"):
        layout_entries(text)


def test_ignored_paths_are_told_apart() -> None:
    paths = [".env", "README.md", "tests/chaos/results/", "tests/chaos/"]
    assert ignored(paths) == {".env", "tests/chaos/results"}


def test_broken_links_and_anchors_are_reported() -> None:
    text = (
        "# Title\n\n## A section\n\nSee [a](architecture.md), [b](missing.md), "
        "[c](reliability.md#faults-under-load), [d](reliability.md#no-such-heading), "
        "[e](#a-section), [f](#nowhere), [g](https://example.org/x.md) and `[h](gone.md)`.\n"
        "\n```\n[i](also-gone.md)\n```\n"
    )
    assert link_problems(text, REPO_ROOT / "docs") == [
        "missing.md: no such file",
        "reliability.md#no-such-heading: no heading #no-such-heading",
        "#nowhere: no heading #nowhere",
    ]


def test_missing_named_paths_are_reported() -> None:
    text = (
        "`services/api/app/config.py`, `services/api/app/gone.py`, `stack/grafana/`, "
        "`stack/paths.py/`, `services/nginx/compose/*.conf`, `services/nginx/*.yaml`, "
        "`application/json`, `/metrics`, `loadtest/reports/<UTC time>/`, `bench/results/`\n"
    )
    assert named_path_problems(text) == [
        "services/api/app/gone.py: does not exist",
        "services/nginx/*.yaml: does not exist",
        "stack/paths.py/: does not exist",
    ]
