"""Build the release files with a README that renders on PyPI.

PyPI shows the README it finds in the package metadata, and it has no repository to resolve
`docs/img/demo.png` against: relative images break and relative links 404. This script stages the
tracked tree, rewrites every relative image to the repository's raw file and every relative link
to its page at one ref (a tag, by default `v{version}`), builds the sdist and wheel there, and
checks the built metadata with PyPI's own renderer (readme_renderer) before anything is uploaded.

    python tools/release.py --repository https://github.com/OWNER/hypernoise   # -> dist/
    twine upload dist/*

The repository URL may also be declared once in pyproject.toml as `[project.urls] Repository`.
Other hosts: `--image-base URL --link-base URL` (each prefix gets the relative path appended).
The checkout itself is never changed.
"""
from __future__ import annotations

import argparse
import email
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [text](target) or ![alt](target "title"); the target is the first group
_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?((?:\s+\"[^\"]*\")?)\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


@dataclass(frozen=True)
class Bases:
    """URL prefixes that a relative path is appended to: images load raw files, links open pages."""

    image: str
    link: str

    @classmethod
    def github(cls, repository: str, ref: str) -> "Bases":
        """Bases of a GitHub repository at `ref` (raw.githubusercontent.com serves the images)."""
        match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository)
        if match is None:
            raise ValueError(
                f"{repository!r} is not a GitHub repository URL (https://github.com/OWNER/NAME): "
                "pass --image-base and --link-base for another host")
        owner, name = match.groups()
        return cls(image=f"https://raw.githubusercontent.com/{owner}/{name}/{ref}/",
                   link=f"https://github.com/{owner}/{name}/blob/{ref}/")


def is_relative(target: str) -> bool:
    """True for a path inside the repository: no scheme, not protocol-relative, not an anchor."""
    return not (_SCHEME.match(target) or target.startswith(("//", "#", "/")))


def relative_targets(markdown: str) -> list[tuple[bool, str]]:
    """(is_image, target) for each relative link or image outside code, in order."""
    found = []
    for line in _prose_lines(markdown):
        for bang, _, target, _ in _LINK.findall(line):
            if is_relative(target):
                found.append((bool(bang), target))
    return found


def absolute_readme(markdown: str, bases: Bases) -> str:
    """The README with every relative image and link made absolute; code blocks are left as they are."""

    def rewrite(match: re.Match) -> str:
        bang, text, target, title = match.groups()
        if not is_relative(target):
            return match.group(0)
        base = bases.image if bang else bases.link
        return f"{bang}[{text}]({base}{target.removeprefix('./')}{title})"

    out, fenced = [], False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        out.append(line if fenced or _is_indented_code(line) else _LINK.sub(rewrite, line))
    return "".join(out)


def render_problems(markdown: str) -> list[str]:
    """What PyPI would show wrong: a render failure, or an image whose src is not an https URL."""
    from readme_renderer.markdown import render

    html = render(markdown)
    if html is None:
        return ["readme_renderer could not render the README"]
    return [f"image {src!r} is not an absolute https URL: PyPI cannot show it"
            for src in _IMG_SRC.findall(html) if not src.startswith("https://")]


def missing_files(markdown: str, root: Path = ROOT) -> list[str]:
    """Relative targets that name no file in the tree (they would 404 after the rewrite)."""
    return [target for _, target in relative_targets(markdown)
            if not (root / target.split("#", 1)[0]).exists()]


def _prose_lines(markdown: str):
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced and not _is_indented_code(line):
            yield line


def _is_indented_code(line: str) -> bool:
    return line.startswith(("    ", "\t")) and not line.lstrip().startswith(("-", "*", "[", "!"))


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _bases(args: argparse.Namespace) -> Bases:
    project = _pyproject()["project"]
    if args.image_base or args.link_base:
        if not (args.image_base and args.link_base):
            raise ValueError("--image-base and --link-base go together")
        return Bases(image=args.image_base.rstrip("/") + "/", link=args.link_base.rstrip("/") + "/")
    repository = args.repository or project.get("urls", {}).get("Repository")
    if not repository:
        raise ValueError("no repository URL to point the README's images at: pass --repository "
                         "https://github.com/OWNER/NAME or declare [project.urls] Repository in pyproject.toml")
    return Bases.github(repository, args.ref or f"v{project['version']}")


def _stage(tree: Path) -> None:
    """Copy the files git tracks (what a clean clone holds) into `tree`."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)


def _wheel_description(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(archive.read(metadata)).get_payload()


def build(bases: Bases, out: Path) -> list[Path]:
    """Stage, rewrite, build into `out` (must not hold earlier files), check; returns the files."""
    readme = (ROOT / "README.md").read_text()
    problems = missing_files(readme)
    if problems:
        raise ValueError(f"README links to files that do not exist: {', '.join(problems)}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: pass an empty or new --out (nothing was overwritten)")
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        _stage(tree)
        (tree / "README.md").write_text(absolute_readme(readme, bases))
        subprocess.run([sys.executable, "-m", "build", "--outdir", str(Path(tmp) / "dist"), str(tree)],
                       check=True, capture_output=True, text=True)
        built = sorted((Path(tmp) / "dist").iterdir())
        wheel = next(p for p in built if p.suffix == ".whl")
        problems = render_problems(_wheel_description(wheel))
        if problems:
            raise ValueError("; ".join(problems))
        out.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy2(p, out / p.name)) for p in built]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", help="https://github.com/OWNER/NAME (default: [project.urls] Repository)")
    parser.add_argument("--ref", help="tag or commit the URLs point at (default: v{version})")
    parser.add_argument("--image-base", help="prefix for images on another host")
    parser.add_argument("--link-base", help="prefix for links on another host")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    try:
        files = build(_bases(args), args.out)
    except (ValueError, OSError) as err:
        print(f"release: {err}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        print(f"release: the build failed: {(err.stderr or '').strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    for path in files:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
