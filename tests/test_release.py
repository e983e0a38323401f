"""README images that render on PyPI (issue 31, item 9): tools/release.py builds the release files
with every relative image and link made absolute, and checks them with PyPI's own renderer."""

import email
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REPO = "https://github.com/acme/hypernoise"
IMAGES = "https://raw.githubusercontent.com/acme/hypernoise/v9.9/"
PAGES = "https://github.com/acme/hypernoise/blob/v9.9/"


def _load_release():
    spec = importlib.util.spec_from_file_location("hypernoise_release_tool", ROOT / "tools" / "release.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


release = _load_release()
render = pytest.importorskip("readme_renderer.markdown").render


def _rendered(markdown: str) -> tuple[list[str], list[str]]:
    html = render(markdown)
    return re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', html), re.findall(r'<a\b[^>]*\bhref="([^"]*)"', html)


def _code(markdown: str) -> list[str]:
    """Fenced and indented code, line by line: what the rewrite must leave alone."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.startswith("    "):
            lines.append(line)
    return lines


def test_the_readme_has_images_and_links_only_to_files_that_exist():
    targets = release.relative_targets(README)
    assert any(is_image for is_image, _ in targets) and any(not is_image for is_image, _ in targets)
    assert release.missing_files(README) == []
    assert release.missing_files(README + "\n![gone](docs/img/not-there.png)\n") == ["docs/img/not-there.png"]


def test_rewritten_readme_renders_every_image_from_the_repository_and_links_to_its_pages():
    bases = release.Bases.github(REPO, "v9.9")
    images_before, _ = _rendered(README)
    assert images_before and release.render_problems(README)  # as it is, PyPI cannot show them

    rewritten = release.absolute_readme(README, bases)
    images, links = _rendered(rewritten)
    relative = release.relative_targets(README)
    assert images == [IMAGES + t for is_image, t in relative if is_image]
    assert [h for h in links if h.startswith(PAGES)] == [PAGES + t for is_image, t in relative if not is_image]
    assert not [h for h in links if release.is_relative(h)]
    assert release.render_problems(rewritten) == []
    assert _code(rewritten) == _code(README)  # commands and snippets untouched
    assert release.absolute_readme(rewritten, bases) == rewritten  # absolute targets are kept


def test_titles_anchors_and_other_hosts():
    bases = release.Bases(image="https://cdn.example/i/", link="https://docs.example/")
    text = '![a](./img/x.png "t") [b](docs/y.md#part) [c](#top) [d](https://x.org/z.md)\n'
    assert release.absolute_readme(text, bases) == (
        '![a](https://cdn.example/i/img/x.png "t") [b](https://docs.example/docs/y.md#part) '
        "[c](#top) [d](https://x.org/z.md)\n")
    with pytest.raises(ValueError, match="not a GitHub repository URL"):
        release.Bases.github("https://gitlab.com/acme/hypernoise", "v1")


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "release.py"), *args], cwd=cwd,
                          capture_output=True, text=True)


def test_without_a_repository_url_it_says_what_to_pass(tmp_path):
    declared = release._pyproject()["project"].get("urls", {}).get("Repository")
    if declared:
        pytest.skip("pyproject.toml declares the repository")
    result = _run("--out", str(tmp_path / "dist"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--repository" in result.stderr
    assert not (tmp_path / "dist").exists()


def test_a_folder_with_files_is_never_overwritten(tmp_path):
    (tmp_path / "old.whl").write_bytes(b"keep me")
    result = _run("--repository", REPO, "--out", str(tmp_path))
    assert result.returncode == 1 and "not empty" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.whl"]
    assert (tmp_path / "old.whl").read_bytes() == b"keep me"


@pytest.mark.slow
def test_the_built_wheel_describes_itself_with_absolute_images_and_the_checkout_is_unchanged(tmp_path):
    pytest.importorskip("build")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    result = _run("--repository", REPO, "--ref", "v9.9", "--out", str(tmp_path / "dist"))
    assert result.returncode == 0, result.stderr
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        description = email.message_from_bytes(archive.read(name)).get_payload()
    images, _ = _rendered(description)
    assert images and all(src.startswith(IMAGES) for src in images)
    assert (ROOT / "README.md").read_text() == README
    assert subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True).stdout == status
