"""Measure reply extraction on the fixture corpus: per-case results, then the accuracy figure.

Run as `.venv/bin/python bench/reply_accuracy.py`. Reply-parsing libraries from PyPI
(email-reply-parser, mail-parser-reply, quotequail) are scored on the same corpus when they can
be imported, so the choice of our own rules over theirs stays a measured one.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from relay.quotes import split_reply  # noqa: E402

CORPUS = REPO / "tests" / "corpus" / "replies"
EXPECTED_SUFFIX = ".expected.txt"
LANGUAGES = ["en", "de", "fr", "es", "nl", "pt", "it"]

Extractor = Callable[[str], str]


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def load_corpus() -> list[tuple[str, str, str]]:
    """(name, body, expected new text) for every case, in name order."""
    cases = []
    for path in sorted(CORPUS.glob("*.txt")):
        if path.name.endswith(EXPECTED_SUFFIX):
            continue
        name = path.name.removesuffix(".txt")
        expected = (CORPUS / f"{name}{EXPECTED_SUFFIX}").read_text(encoding="utf-8")
        cases.append((name, path.read_text(encoding="utf-8"), expected))
    return cases


def score(extract: Extractor, cases: list[tuple[str, str, str]]) -> list[bool]:
    return [normalise(extract(body)) == normalise(expected) for _, body, expected in cases]


def library_extractors() -> dict[str, Extractor | None]:
    """Each compared library's best-fitting call, or None when it is not installed."""

    def load(module: str) -> Any:
        try:
            return importlib.import_module(module)
        except ImportError:
            return None

    extractors: dict[str, Extractor | None] = {}
    erp = load("email_reply_parser")
    extractors["email-reply-parser"] = (
        None if erp is None else lambda text: str(erp.EmailReplyParser.parse_reply(text) or "")
    )
    mpr = load("mailparser_reply")
    if mpr is None:
        extractors["mail-parser-reply"] = None
    else:
        parser = mpr.EmailReplyParser(languages=LANGUAGES)
        # latest_reply keeps signatures; .body drops them but also drops sign-offs like
        # "Best," and scores lower on this corpus, so the fairer call is the one measured.
        extractors["mail-parser-reply"] = lambda text: str(parser.parse_reply(text) or "")
    quotequail = load("quotequail")
    extractors["quotequail"] = (
        None
        if quotequail is None
        else lambda text: "".join(
            str(part) for shown, part in quotequail.quote(text, quote_intro_line=True) if shown
        )
    )
    return extractors


def percent(passed: int, total: int) -> str:
    return f"{passed}/{total} ({100 * passed / total:.1f}%)" if total else "0/0 (n/a)"


def main() -> int:
    cases = load_corpus()
    results = score(lambda text: split_reply(text).new, cases)
    for (name, _, _), ok in zip(cases, results, strict=True):
        print(f"{'pass' if ok else 'FAIL'}  {name}")
    for library, extract in library_extractors().items():
        if extract is None:
            print(f"{library}: not installed, not measured")
        else:
            print(f"{library} accuracy: {percent(sum(score(extract, cases)), len(cases))}")
    print(f"reply extraction accuracy: {percent(sum(results), len(cases))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
