"""Reply-text extraction: the corpus of real client formats, then the split's invariants."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from relay.quotes import ReplyText, split_reply

CORPUS = Path(__file__).parent / "corpus" / "replies"
EXPECTED_SUFFIX = ".expected.txt"


def corpus_names() -> list[str]:
    return sorted(
        path.name.removesuffix(".txt")
        for path in CORPUS.glob("*.txt")
        if not path.name.endswith(EXPECTED_SUFFIX)
    )


def normalise(text: str) -> str:
    # Trailing spaces are invisible and some editors strip them from fixtures; nothing else is.
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def read_case(name: str) -> tuple[str, str]:
    body = (CORPUS / f"{name}.txt").read_text(encoding="utf-8")
    expected = (CORPUS / f"{name}{EXPECTED_SUFFIX}").read_text(encoding="utf-8")
    return body, expected


def tokens(*texts: str) -> Counter[str]:
    return Counter(token for text in texts for token in text.split())


def test_corpus_covers_enough_cases() -> None:
    names = corpus_names()
    assert len(names) >= 30
    for name in names:
        assert (CORPUS / f"{name}{EXPECTED_SUFFIX}").is_file(), name


@pytest.mark.parametrize("name", corpus_names())
def test_corpus_case(name: str) -> None:
    body, expected = read_case(name)
    assert normalise(split_reply(body).new) == normalise(expected)


@pytest.mark.parametrize("name", corpus_names())
def test_corpus_case_loses_nothing(name: str) -> None:
    body, _ = read_case(name)
    result = split_reply(body)
    assert tokens(result.new, result.quoted) == tokens(body)


def test_quoted_holds_history_and_signature() -> None:
    body = (
        "Yes, the driver has it.\n\n-- \nKatrin\n\n"
        "On Thu, Nov 12, 2026 at 9:14 AM Support <ticket-12-x@relay.localhost> wrote:\n"
        "> Could the driver keep the umbrella?\n"
    )
    result = split_reply(body)
    assert result.new == "Yes, the driver has it."
    assert result.quoted.startswith("-- \nKatrin")
    assert result.quoted.endswith("> Could the driver keep the umbrella?")


def test_nothing_removed_leaves_quoted_empty() -> None:
    assert split_reply("  Thanks, done.\n\n") == ReplyText("Thanks, done.", "")


@pytest.mark.parametrize(
    "body",
    [
        "",
        "   \n\t\n",
        "> only a quote\n> nothing else\n",
        "On 11/12/26 9:14 AM, Support wrote:\n> Could the driver keep it?\n",
        "-- \nKatrin Vogel\nBerlin Cabs\n",
        "Sent from my iPhone\n",
        "From: Support <s@relay.localhost>\nSent: Thursday\nTo: x\nSubject: y\n\nOriginal.\n",
    ],
)
def test_empty_after_strip_keeps_full_text(body: str) -> None:
    assert split_reply(body) == ReplyText(body.strip(), "")


def test_bottom_post_drops_the_quote_above() -> None:
    body = "On 11/12/26 9:14 AM, Support wrote:\n> Could he keep it?\n\nYes.\n\n-- \nJan\n"
    result = split_reply(body)
    assert result.new == "Yes."
    assert tokens(result.new, result.quoted) == tokens(body)


def test_inline_answers_keep_everything_down_to_the_last_answer() -> None:
    body = "> Question one?\nAnswer one.\n> Question two?\nAnswer two.\n> Footer\n"
    assert split_reply(body) == ReplyText(
        "> Question one?\nAnswer one.\n> Question two?\nAnswer two.", "> Footer"
    )


def test_forward_is_kept_whole() -> None:
    body = (
        "See below.\n\n---------- Forwarded message ---------\n"
        "From: Driver <d@fleet.example>\nDate: Thu, 12 Nov 2026\nSubject: Umbrella\n"
        "To: dispatch@fleet.example\n\nI have it.\n\n-- \nDriver\n"
    )
    assert split_reply(body) == ReplyText(body.strip(), "")


def test_crlf_line_endings() -> None:
    body = "Done.\r\n\r\nOn 11/12/26 9:14 AM, Support wrote:\r\n> Refund?\r\n"
    assert split_reply(body).new == "Done."


def test_prose_that_resembles_markers_is_kept() -> None:
    body = (
        "Sent from the airport, the driver says it is fine.\n"
        "On Monday the passenger wrote:\n"
        "she will come by.\n"
        "--- see below ---\n"
        "From: Hotel Adlon\nTo: BER\n"
    )
    assert split_reply(body) == ReplyText(body.strip(), "")


def test_wrapped_attribution_is_recognised() -> None:
    body = (
        "Found it.\n\nOn Thu, Nov 12, 2026 at 9:14 AM Support <\n"
        "ticket-12-k7qz3m2xw4p5n6ra@relay.localhost> wrote:\n\n> Umbrella?\n"
    )
    result = split_reply(body)
    assert result.new == "Found it."
    assert result.quoted.startswith("On Thu, Nov 12")


@pytest.mark.parametrize(
    "body",
    [
        ">" * 1_000_000,
        " " * 1_000_000,
        " " * 1_000_000 + "x",
        "On " + "x" * 1_000_000 + " wrote:",
        "-" * 1_000_000,
        ("Am " + "schrieb " * 45 + ":\n") * 5_000,
        ("From: x\n" + "Sent: y\n" * 7 + "Subject: z\n") * 20_000,
        ("--" + " " * 200 + "y" + " " * 150 + "--\n") * 10_000,
    ],
    ids=[
        "gt-line",
        "space-line",
        "space-line-then-text",
        "long-attribution",
        "dash-line",
        "many-verbs",
        "many-headers",
        "spaced-dashes",
    ],
)
def test_hostile_input_returns(body: str) -> None:
    result = split_reply(body)
    assert tokens(result.new, result.quoted) == tokens(body)
