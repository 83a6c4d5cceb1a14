"""Measure reply extraction on the fixture corpora: per-case results, then the accuracy figure.

Run as `.venv/bin/python bench/reply_accuracy.py`: the development corpus
(tests/corpus/replies, written together with the rules, so an upper bound) and then the
held-out corpus (tests/corpus/replies_heldout, written blind, the honest figure), each with
its per-case results and its accuracy line. `--corpus PATH` scores one directory of
NAME.txt / NAME.expected.txt pairs instead. Reply-parsing libraries from PyPI
(email-reply-parser, mail-parser-reply, quotequail) are scored on the same corpus when they can
be imported, so the choice of our own rules over theirs stays a measured one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from relay.quotes import split_reply  # noqa: E402

CORPUS = REPO / "tests" / "corpus" / "replies"
HELDOUT_CORPUS = REPO / "tests" / "corpus" / "replies_heldout"
EXPECTED_SUFFIX = ".expected.txt"
LANGUAGES = ["en", "de", "fr", "es", "nl", "pt", "it"]

Extractor = Callable[[str], str]


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def load_corpus(corpus: Path = CORPUS) -> list[tuple[str, str, str]]:
    """(name, body, expected new text) for every case of `corpus`, in name order."""
    cases = []
    for path in sorted(corpus.glob("*.txt")):
        if path.name.endswith(EXPECTED_SUFFIX):
            continue
        name = path.name.removesuffix(".txt")
        expected = (corpus / f"{name}{EXPECTED_SUFFIX}").read_text(encoding="utf-8")
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


def shown(corpus: Path) -> str:
    """The corpus path relative to the repository when it is inside it, for the report."""
    return str(corpus.relative_to(REPO)) if corpus.is_relative_to(REPO) else str(corpus)


def report(corpus: Path) -> None:
    """Per-case results, the libraries' figures, then ours, for one corpus."""
    cases = load_corpus(corpus)
    print(f"== {shown(corpus)}")
    results = score(lambda text: split_reply(text).new, cases)
    for (name, _, _), ok in zip(cases, results, strict=True):
        print(f"{'pass' if ok else 'FAIL'}  {name}")
    for library, extract in library_extractors().items():
        if extract is None:
            print(f"{library}: not installed, not measured")
        else:
            print(f"{library} accuracy: {percent(sum(score(extract, cases)), len(cases))}")
    print(f"reply extraction accuracy ({shown(corpus)}): {percent(sum(results), len(cases))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--corpus",
        type=Path,
        help="score only this directory of NAME.txt / NAME.expected.txt pairs "
        "(default: the development corpus, then the held-out one)",
    )
    args = parser.parse_args(argv)
    corpora = [args.corpus.resolve()] if args.corpus else [CORPUS, HELDOUT_CORPUS]
    for number, corpus in enumerate(corpora):
        if not corpus.is_dir():
            parser.error(f"no such corpus directory: {corpus}")
        if number:
            print()
        report(corpus)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
