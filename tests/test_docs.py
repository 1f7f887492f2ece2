"""README.md stays short; its links and the docs pages' resolve; the methods table is the same in both places; the
MkDocs site builds in strict mode (a broken link, anchor or snippet fails it)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc (MkDocs) gives a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def local_links(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if not re.match(r"[a-z]+:", target):
            yield target


def test_readme_is_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_relative_link_resolves_to_a_file_and_heading():
    assert {p.name for p in PAGES} >= {"method.md", "running.md", "demo.md", "scenarios.md", "deployment.md",
                                       "results.md", "configuration.md", "extending.md"}
    checked = 0
    for page in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *PAGES]:
        for target in local_links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.is_file(), f"{page.name}: link to {target}: no such file"
            if anchor:
                assert anchor in anchors(dest), f"{page.name}: link to {target}: no such heading"
            checked += 1
    assert checked >= 20


def test_readme_links_every_docs_page():
    linked = {t.split("#")[0] for t in local_links(ROOT / "README.md")}
    assert {f"docs/{p.name}" for p in PAGES if p.name != "index.md"} <= linked


def methods_table(text: str) -> list[str]:
    start = text.index("| command | what |")
    rows = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_methods_table_of_readme_and_running_page_agree_and_name_every_registered_method():
    from ladalit.registry import METHODS
    table = methods_table((ROOT / "README.md").read_text())
    assert table == methods_table((ROOT / "docs" / "running.md").read_text())
    text = "\n".join(table)
    for name in METHODS:
        assert f"`{name}`" in text or f"`method={name}`" in text, name


def test_slug_matches_the_toc_extension():
    assert slug("Time of the first command") == "time-of-the-first-command"
    assert slug("The paper's scenarios on GPUs") == "the-papers-scenarios-on-gpus"
    assert slug("`reward`") == "reward"


def mkdocs_build(root: Path, site: Path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(root)}
    # no -q: mkdocs 1.6 then stops counting warnings, and --strict passes whatever they say
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=180, env=env)


def test_docs_site_builds_in_strict_mode_with_the_api_pages(tmp_path):
    proc = mkdocs_build(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "site" / "api" / "filter" / "index.html").read_text()
    assert "build_exploit_net" in api and "LearnabilityFilter" in api  # mkdocstrings rendered the class
    assert "freeze_reference" in (tmp_path / "site" / "api" / "participant" / "index.html").read_text()
    roles = (tmp_path / "site" / "api" / "roles" / "index.html").read_text()
    assert all(name in roles for name in ("LadaServer", "LadaClient", "run_round", "handle"))


def test_a_broken_link_fails_the_strict_build(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in ("docs", "mkdocs.yml", "site", ".git"):
            (copy / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")  # a link would put docs_dir back in ROOT
    page = copy / "docs" / "running.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md).\n")
    proc = mkdocs_build(copy, tmp_path / "site")
    assert proc.returncode != 0 and "no-such-page.md" in proc.stdout + proc.stderr
