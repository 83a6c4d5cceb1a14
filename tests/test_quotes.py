"""Reply-text extraction: the corpus of real client formats, then the split's invariants."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.quotes import ReplyText, _split_lines, split_reply

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
        "\n" + " " * 1_000_000 + "x",
        (" " * 100 + "\n") * 10_000,
        (":" + "\u00a0" * 1_000 + "x") * 1_000,
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
        "blank-run-after-break",
        "blank-lines",
        "colon-then-blanks",
    ],
)
def test_hostile_input_returns(body: str) -> None:
    result = split_reply(body)
    assert tokens(result.new, result.quoted) == tokens(body)


# Words of every marker split_reply knows, so that generated text reaches each of them.
MARKER_WORDS = [
    ">",
    "> quoted",
    "--",
    "-- ",
    "-----Original Message-----",
    "---------- Forwarded message ---------",
    "Begin forwarded message:",
    "____________________",
    "From: Dispatch",
    "*From:* Dispatch",
    "FROM*:",
    "Von: a",
    "De : b",
    "Da: c",
    "Van: d",
    "Sent: Monday",
    "Date: today",
    "Data: oggi",
    "Subject: Trip",
    "Betreff: Fahrt",
    "On Mon, 1 Jan 2024, Dispatch <d@fleet.example> wrote:",
    "On Monday the driver",
    "wrote:",
    "Am 01.01.2024 schrieb Dispatch:",
    "Le 1 janv. 2024, Dispatch a écrit :",
    "El lun, Dispatch escribió:",
    "Op 1 jan. 2024 heeft Dispatch het volgende geschreven:",
    "Em 1 de jan, Dispatch escreveu:",
    "Il giorno 1 gen, Dispatch ha scritto:",
    "Sent from my iPhone",
    "Sent with Proton Mail",
    "Get Outlook for iOS",
    "Von meinem iPhone gesendet",
    "Gesendet von Mail für Windows",
    "Holen Sie sich Outlook für iOS",
    "Envoyé de mon iPhone",
    "Obtenir Outlook pour Android",
    "Enviado desde mi iPhone",
    "Enviado do meu iPhone",
    "Obtener Outlook para iOS",
    "Obter o Outlook para Android",
    "Verzonden vanaf mijn iPhone",
    "Verstuurd met Outlook",
    "Outlook voor iOS downloaden",
    "Inviato da iPhone",
    "Scarica Outlook per Android",
    "ſent from my iPhone",  # re's IGNORECASE folds U+017F to "s"
    # Whole blocks, which only count together.
    "From: A\nSent: B\nTo: C\nSubject: D",
    "*From:* A\n*Date:* B\n*Subject:* C",
    " *From:* A\n*Sent:* B\n*Subject:* C",
    "Von: A\nGesendet: B\nBetreff: C",
    "__________\nDe : A\nEnvoyé : B\nObjet : C",
    "On Mon, A <a@b.example> wrote:\n> x",
    "Dispatch wrote:\n> x",
    "Da: A\nInviato: B\nOggetto: C",
    "Da: A\nData: B\nOggetto: C",
    "Van: A\nVerzonden: B\nOnderwerp: C",
    "De: A\nEnviado el: B\nAsunto: C",
]
# Blanks the split treats differently: str.strip's, splitlines' and the " \t" of quotes.
ODD_BLANKS = " \t\u00a0\u2028\x1c\x0b\r\n"


PLAIN_LINES = ["Hello,", "The driver waited 10 minutes.", "Thanks", "", "Trip 1001", "On time"]


@st.composite
def reply_like_text(draw: st.DrawFn) -> str:
    """Plain lines with at most two marker lines among them: a marker among many others
    would send both readings down the same line-by-line path."""
    lines = draw(st.lists(st.sampled_from(PLAIN_LINES) | st.text(max_size=20), max_size=8))
    for marker in draw(st.lists(st.sampled_from(MARKER_WORDS), max_size=2)):
        lines.insert(draw(st.integers(0, len(lines))), marker)
    dressed = [
        draw(st.text(alphabet=ODD_BLANKS, max_size=2))
        + line
        + draw(st.text(alphabet=ODD_BLANKS + ":x", max_size=2))
        for line in lines
    ]
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(dressed)


@settings(max_examples=2000, deadline=None)
@given(reply_like_text())
def test_the_whole_text_check_never_skips_a_marker(text: str) -> None:
    # split_reply skips the line-by-line reading when no line may be a marker: both
    # readings must agree on any text.
    assert split_reply(text) == _split_lines(text, text.splitlines())


def test_each_marker_alone_in_plain_text_takes_the_same_reading() -> None:
    # Every marker word in every place, as the single one in otherwise plain text: the case
    # where a gap in the whole-text check would show, which random text reaches only by luck.
    checked = 0
    for marker in MARKER_WORDS:
        for lead, tail in (("", ""), (" ", " "), ("\u00a0", "\t")):
            line = lead + marker + tail
            for lines in ([line, "Hello"], ["Hello", line], ["Hello", line, "Thanks"]):
                for eol in ("\n", "\r\n"):
                    text = eol.join(lines)
                    assert split_reply(text) == _split_lines(text, text.splitlines()), text
                    checked += 1
    assert checked == len(MARKER_WORDS) * 3 * 3 * 2
