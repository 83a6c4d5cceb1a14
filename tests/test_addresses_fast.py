"""The plain-form shortcuts in relay.addresses read exactly what the full parsers read.

Each shortcut accepts only a narrow grammar and hands anything else to the full path; these
properties generate headers and envelope arguments near that grammar's edges (dots, quotes,
encoded words, comments, groups, stray brackets, non-ASCII) and compare the two paths.
"""

from __future__ import annotations

import email.utils
from email import policy
from email.errors import HeaderParseError

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.addresses import (
    _PLAIN_FROM,
    full_envelope_address,
    parse_from_header,
    plain_addresses,
    plain_envelope_address,
    read_from_header,
)

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_TRICKY = '.@,;:<>()[]"\\ \t=?é\x00'

_atoms = st.text(alphabet=_ATEXT, min_size=1, max_size=6)
_dot_atoms = st.lists(_atoms, min_size=1, max_size=3).map(".".join)
_sloppy = st.text(alphabet=_ATEXT + _TRICKY, min_size=0, max_size=8)
# The email package decodes an encoded word even as an address's local part or domain.
_encoded = st.sampled_from(["=?utf-8?q?bob?=", "=?us-ascii?q?ceo?=", "=?utf-8?b?Ym9i?="])
_local = st.one_of(_dot_atoms, _sloppy, _encoded)
_domain = st.one_of(
    st.lists(st.text(alphabet="abc-09", min_size=1, max_size=5), min_size=1, max_size=3).map(
        ".".join
    ),
    _sloppy,
    st.just("[192.0.2.1]"),
    _encoded,
)
_address = st.builds(lambda local, domain: f"{local}@{domain}", _local, _domain)
_blank = st.text(alphabet=" \t", max_size=2)
_word = st.text(alphabet=_ATEXT + ".\u00e9", min_size=1, max_size=6)
_name = st.one_of(
    st.just(""),
    st.lists(st.tuples(_word, st.text(alphabet=" \t", min_size=1, max_size=3)), min_size=1).map(
        lambda pairs: "".join(w + gap for w, gap in pairs).rstrip(" \t")
    ),
    st.builds(lambda text: f'"{text}"', st.text(alphabet=_ATEXT + _TRICKY, max_size=10)),
    st.just("=?utf-8?q?Jos=C3=A9?="),
    st.just('"=?utf-8?q?Jos=C3=A9?="'),
)
_mailbox = st.one_of(
    st.builds(lambda a, n, b1, b2: f"{b1}{n}{b2}<{a}>{b1}", _address, _name, _blank, _blank),
    st.builds(lambda a, b: f"{b}{a}{b}", _address, _blank),
)
_header = st.one_of(
    _mailbox,
    st.lists(_mailbox, min_size=2, max_size=3).map(",".join),
    st.builds(lambda g, m: f"{g}: {m};", _word, _mailbox),  # a group
    st.text(alphabet=_ATEXT + _TRICKY, max_size=30),
)


@settings(max_examples=1500, deadline=None)
@given(_header)
@example("John Smith <JS@Example.com>")
@example('"x@y.example" <a@b.example>')
@example('"=?utf-8?q?J=C3=A9?=" <a@b.example>')
@example("John Q. Public <a@b.example>")
@example("John   Smith\t <js@example.com>")
@example("=?utf-8?q?x?=@b.example")
@example("Bob <=?us-ascii?q?ceo?=@b.example>")
def test_from_header_shortcut_reads_what_both_parsers_read(header: str) -> None:
    assert read_from_header(header) == parse_from_header(header)


def test_the_usual_from_headers_take_the_shortcut() -> None:
    # Otherwise the property above compares the full path with itself.
    for header in [
        "Dispatch <dispatch@citycabs.example>",
        '"Smith, John" <john.smith@fleet.example>',
        "dispatch@citycabs.example",
        "  Dispatch   Desk\t<dispatch@citycabs.example> ",
    ]:
        assert _PLAIN_FROM.fullmatch(header), header


def _full_recipients(values: list[str]) -> list[str]:
    # What relay.parsing read before the shortcut: policy.default's rendering of each
    # header, then the lenient parser.
    rendered = [str(policy.default.header_fetch_parse("To", v)) for v in values]
    return [a for _, a in email.utils.getaddresses(rendered) if "@" in a]


@settings(max_examples=1500, deadline=None)
@given(st.lists(_header, min_size=1, max_size=2))
@example(['A <a@b.example>, "x, y" <c@d.example>', "e@f.example"])
@example(['"a,b@c" <d@e.example>'])
@example(["=?utf-8?q?bob?=@x.example"])
def test_recipients_shortcut_reads_what_the_full_path_reads(values: list[str]) -> None:
    plain = plain_addresses(values)
    if plain is not None:
        assert plain == _full_recipients(values)


def test_the_usual_recipient_headers_take_the_shortcut() -> None:
    assert plain_addresses(["Acme <p-1@relay.example>, ops@acme.example"]) == [
        "p-1@relay.example",
        "ops@acme.example",
    ]
    assert plain_addresses(["undisclosed-recipients:;"]) is None


_params = st.sampled_from(
    [
        "",
        " SIZE=2048",
        "  BODY=8BITMIME SMTPUTF8",
        "x",
        " (c) x",
        "(c)",
        " \rSIZE=1",
        "\x0bSIZE=1",
        " \xa0SIZE=1",
        "\t \x0c(c) SIZE=1",
    ]
)


@settings(max_examples=1500, deadline=None)
@given(st.builds(lambda b, a, p: f"{b}<{a}>{p}", _blank, _address, _params))
@example("<t-abc@relay.example> SIZE=2048")
@example("<a@b.example>  (comment) SIZE=1")
@example("<a..b@c.example>")
@example("<=?utf-8?q?t-abc?=@relay.example>")
@example("<a@b.example> \rSIZE=1")
def test_envelope_shortcut_reads_what_get_angle_addr_reads(arg: str) -> None:
    plain = plain_envelope_address(arg)
    if plain is None:
        return
    try:
        full = full_envelope_address(arg)
    except HeaderParseError:  # pragma: no cover - the property's failure, shown plainly
        raise AssertionError(f"shortcut read {plain!r} where the full parser refuses") from None
    assert plain == full


def test_the_usual_envelope_arguments_take_the_shortcut() -> None:
    assert plain_envelope_address("<t-abc@relay.example> SIZE=2048") == (
        "t-abc@relay.example",
        "SIZE=2048",
    )
    assert plain_envelope_address("<>") is None  # the null sender: the full path's case
