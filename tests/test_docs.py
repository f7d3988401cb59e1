"""The documentation: the README stays a short guide, docs/ holds the reference, and `mkdocs build --strict` (the
configuration in mkdocs.yml, which turns every broken link, missing anchor and page outside the nav into a
warning) builds it without a warning. Also proves that the strict build fails on each kind of broken link."""

import glob
import logging
import os
import re
import shutil

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
MKDOCS_YML = os.path.join(REPO, "mkdocs.yml")
README_MAX_LINES = 260

try:
    from markdown.extensions.toc import slugify
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort
except ImportError as e:  # a clear failure, not a skip: CI must build the docs
    raise ImportError(f"the docs tests need mkdocs and mkdocs-material ({e}); "
                      "install them with: pip install -r requirements-dev.txt") from e


def strict_build(config_file, site_dir):
    """`mkdocs build --strict --site-dir site_dir`, in this process; raises mkdocs' Abort on any warning."""
    old = os.environ.get("NO_MKDOCS_2_WARNING")
    os.environ["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about its successor; not a build warning
    try:
        build(load_config(config_file=str(config_file), strict=True, site_dir=str(site_dir)))
    finally:
        if old is None:
            os.environ.pop("NO_MKDOCS_2_WARNING", None)
        else:
            os.environ["NO_MKDOCS_2_WARNING"] = old


def nav_pages(nav):
    """The Markdown files the nav of mkdocs.yml lists, at any depth."""
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += nav_pages(value)
        elif not re.match(r"^[a-z]+://", value):
            pages.append(value)
    return pages


def heading_slugs(path):
    """The anchors of a Markdown page, by the rule of mkdocs' toc extension (lower case, spaces to '-',
    punctuation dropped), from its headings outside code blocks."""
    slugs, in_code = set(), False
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"^#{1,6} ", line):
            text = re.sub(r"`([^`]*)`", r"\1", line.lstrip("#").strip())
            slugs.add(slugify(text, "-"))
    return slugs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    strict_build(MKDOCS_YML, out)
    return out


def test_docs_build_in_strict_mode_with_every_nav_page(site):
    pages = nav_pages(yaml.safe_load(open(MKDOCS_YML, encoding="utf-8"))["nav"])
    assert "index.md" in pages
    for page in pages:
        stem = page[:-len(".md")]
        html = site / "index.html" if stem == "index" else site / stem / "index.html"
        assert html.is_file(), f"{page}: no {html.relative_to(site)} in the built site"


def test_every_docs_page_is_in_the_nav():
    pages = nav_pages(yaml.safe_load(open(MKDOCS_YML, encoding="utf-8"))["nav"])
    on_disk = sorted(os.path.relpath(p, DOCS).replace(os.sep, "/")
                     for p in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))
    assert sorted(pages) == on_disk
    assert len(set(pages)) == len(pages)


def test_readme_is_a_short_guide_whose_links_resolve():
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert len(text.splitlines()) <= README_MAX_LINES
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"^[a-z]+://", link)]
    to_docs = {link.split("#")[0] for link in local if link.startswith("docs/")}
    # every page is reachable from the README
    assert to_docs >= {os.path.relpath(p, REPO).replace(os.sep, "/") for p in glob.glob(os.path.join(DOCS, "*.md"))}
    for link in local:
        path, _, anchor = link.partition("#")
        assert os.path.isfile(os.path.join(REPO, path)), f"README links to {link}: no file {path}"
        if anchor:
            assert anchor in heading_slugs(os.path.join(REPO, path)), f"README links to {link}: no such heading"


@pytest.mark.parametrize("broken, says", [
    ("[a missing page](no-such-page.md)", "no-such-page.md"),
    ("[a missing anchor](training.md#no-such-heading)", "no-such-heading"),
    ("[a missing anchor on this page](#no-such-heading)", "no-such-heading"),
    (None, "not-in-nav.md"),  # a page that the nav leaves out
])
def test_strict_build_fails_on_a_broken_link(tmp_path, caplog, broken, says):
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(MKDOCS_YML, tmp_path / "mkdocs.yml")
    if broken is None:
        (tmp_path / "docs" / "not-in-nav.md").write_text("# A page the nav leaves out\n", encoding="utf-8")
    else:
        with open(tmp_path / "docs" / "index.md", "a", encoding="utf-8") as f:
            f.write(f"\nSee {broken}.\n")
    with caplog.at_level(logging.WARNING, logger="mkdocs"), pytest.raises(Abort):
        strict_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert any(says in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING), caplog.text
