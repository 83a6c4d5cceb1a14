"""HTML mail bodies: what a partner may be shown, and the plain text a reader gets."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from relay.html import html_to_text, sanitize_html

OUTLOOK_REPLY = """\
<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office"
xmlns:w="urn:schemas-microsoft-com:office:word" xmlns="http://www.w3.org/TR/REC-html40">
<head><meta http-equiv=Content-Type content="text/html; charset=utf-8">
<meta name=Generator content="Microsoft Word 15 (filtered medium)">
<title>RE: Load 4411</title>
<!--[if gte mso 9]><xml>
<o:shapedefaults v:ext="edit" spidmax="1026" />
</xml><![endif]-->
<style><!--
@font-face {font-family:"Cambria Math"; src:url(https://t.example/font.woff);}
p.MsoNormal, li.MsoNormal {margin:0cm; font-size:11.0pt; font-family:"Calibri",sans-serif;}
--></style>
<!--[if gte mso 9]><xml><o:shapelayout v:ext="edit"><o:idmap v:ext="edit" data="1" />
</o:shapelayout></xml><![endif]--></head>
<body lang=EN-US link="#0563C1" vlink="#954F72" style='word-wrap:break-word'>
<div class=WordSection1>
<p class=MsoNormal>Hi Anna,<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>The truck is at the dock, ETA 14:30.<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Regards,<br>Jan<o:p></o:p></p>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>
<p class=MsoNormal><b>From:</b> Support &lt;support@relay.example&gt; <br>
<b>Sent:</b> Monday, 3 March 2025 09:12<br>
<b>To:</b> Jan &lt;jan@fleet.example&gt;<br>
<b>Subject:</b> Load 4411<o:p></o:p></p>
</div>
<p class=MsoNormal><o:p>&nbsp;</o:p></p>
<p class=MsoNormal>Where is the truck?<o:p></o:p></p>
</div>
</body>
</html>
"""

GMAIL_REPLY = (
    '<div dir="ltr">Thanks, delivered.<div><br></div><div>Piet</div></div><br>'
    '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, 3 Mar 2025 at 09:12, '
    'Support &lt;<a href="mailto:support@relay.example">support@relay.example</a>&gt; wrote:'
    '<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
    'border-left:1px solid rgb(204,204,204);padding-left:1ex"><div dir="ltr">Where is the truck?'
    '<br><br>Track it <a href="https://track.example/4411">here</a>.</div></blockquote></div>\n'
)

APPLE_MAIL_REPLY = (
    '<html><head><meta http-equiv="content-type" content="text/html; charset=utf-8"></head>'
    '<body style="overflow-wrap: break-word; -webkit-nbsp-mode: space;">On my way.'
    '<div><br><blockquote type="cite"><div>On 3 Mar 2025, at 09:12, Support '
    "&lt;support@relay.example&gt; wrote:</div><br><div><div>Where is the truck?</div>"
    '<blockquote type="cite">Load 4411 is late.</blockquote></div></blockquote></div>'
    "<br></body></html>"
)


# --- sanitize_html: real replies ---------------------------------------------------------


def test_outlook_reply_keeps_its_text_and_loses_its_office_scaffolding() -> None:
    clean = sanitize_html(OUTLOOK_REPLY)

    assert "The truck is at the dock, ETA 14:30." in clean
    assert "<b>From:</b> Support &lt;support@relay.example&gt;" in clean
    assert 'style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm"' in clean
    for leftover in ("<!--", "mso", "<o:", "<xml", "<style", "url(", "<meta", "RE: Load", "class="):
        assert leftover not in clean


def test_gmail_reply_keeps_the_quote_and_its_links() -> None:
    clean = sanitize_html(GMAIL_REPLY)

    assert "<blockquote" in clean and "Where is the truck?" in clean
    assert (
        '<a href="https://track.example/4411" rel="noopener noreferrer nofollow">here</a>' in clean
    )
    assert '<a href="mailto:support@relay.example" rel="noopener noreferrer nofollow">' in clean
    assert "border-left:1px solid" in clean


def test_apple_mail_quotes_stay_marked_as_citations() -> None:
    clean = sanitize_html(APPLE_MAIL_REPLY)

    assert clean.count('<blockquote type="cite">') == 2
    assert "<meta" not in clean and "-webkit" not in clean


# --- sanitize_html: images ---------------------------------------------------------------

TRACKED = '<p>Done.</p><img src="https://t.example/p.gif" width=1 height=1>'


def test_tracking_pixel_is_removed_whole() -> None:
    assert sanitize_html(TRACKED) == "<p>Done.</p>"


def test_remote_images_can_be_allowed() -> None:
    clean = sanitize_html(TRACKED, allow_remote_images=True)

    assert '<img src="https://t.example/p.gif" width="1" height="1">' in clean


@pytest.mark.parametrize(
    "src", ["//t.example/p.gif", "ftp://t.example/p.gif", "p.gif", "javascript:alert(1)"]
)
def test_images_from_anywhere_else_are_removed(src: str) -> None:
    assert sanitize_html(f'<img src="{src}" alt="x">', allow_remote_images=True) == ""


SIGNATURE = '<p>Jan</p><img src="cid:Logo.PNG@01D9" alt="ACME" onerror="alert(1)">'


@pytest.mark.parametrize("cid", ["logo.png@01d9", "<Logo.PNG@01D9>", " <LOGO.png@01d9> "])
def test_inline_image_is_kept_when_its_part_is_attached(cid: str) -> None:
    clean = sanitize_html(SIGNATURE, inline_cids=[cid])

    assert clean == '<p>Jan</p><img src="cid:Logo.PNG@01D9" alt="ACME">'


def test_inline_image_without_its_part_is_removed() -> None:
    assert sanitize_html(SIGNATURE, inline_cids=["<other@01D9>"]) == "<p>Jan</p>"
    assert sanitize_html(SIGNATURE) == "<p>Jan</p>"


def test_percent_encoded_cid_matches_its_content_id() -> None:
    # RFC 2392: the cid: URL is the Content-ID with URL escapes.
    clean = sanitize_html(
        '<img src="cid:part1%40fleet.example">', inline_cids=["<part1@fleet.example>"]
    )

    assert '<img src="cid:part1%40fleet.example">' == clean


def test_only_inline_raster_data_images_survive() -> None:
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="
    markup = (
        f'<img src="{png}" alt="chart">'
        '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">'
        '<img src="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">'
    )

    assert sanitize_html(markup) == f'<img src="{png}" alt="chart">'


# --- sanitize_html: active content -------------------------------------------------------


@pytest.mark.parametrize(
    "markup",
    [
        "<p>hi</p><script>alert(1)</script>",
        "<p>hi</p><SCRIPT type=text/javascript>document.write('<p>x</p>')</SCRIPT >",
        "<p>hi</p><img src=x onerror=alert(1)>",
        '<p onclick="alert(1)">hi</p>',
        "<p>hi</p><svg onload=alert(1)><script>alert(2)</script></svg>",
        "<p>hi</p><body onload=alert(1)>",
    ],
)
def test_scripts_and_event_handlers_are_gone(markup: str) -> None:
    clean = sanitize_html(markup)

    assert clean == "<p>hi</p>"


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "&#106;avascript:alert(1)",
        "&#x6A;&#x61;vascript&#58;alert(1)",
        "java&#x09;script:alert(1)",
        "java\nscript:alert(1)",
        " \x01javascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "/relative/path",
    ],
)
def test_links_to_anything_but_web_or_mail_lose_their_target(href: str) -> None:
    clean = sanitize_html(f'<a href="{href}">open</a>')

    assert clean == '<a rel="noopener noreferrer nofollow">open</a>'


@pytest.mark.parametrize(
    "markup",
    [
        '<form action="https://evil.example/"><input name="pw"><button>Send</button></form>',
        '<iframe src="https://evil.example/"></iframe>',
        '<object data="https://evil.example/x.swf"></object><embed src="x.swf">',
        '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
        '<base href="https://evil.example/">',
        '<link rel="stylesheet" href="https://t.example/x.css">',
        "<style>@import url(https://t.example/x.css); p { color: red }</style>",
    ],
)
def test_forms_frames_and_document_level_tags_are_dropped(markup: str) -> None:
    clean = sanitize_html(f"<p>reply</p>{markup}")

    assert "evil" not in clean and "t.example" not in clean
    for tag in ("<form", "<input", "<iframe", "<object", "<embed", "<meta", "<base", "<link"):
        assert tag not in clean
    assert "<style" not in clean and "@import" not in clean
    assert clean.startswith("<p>reply</p>")


def test_style_attribute_keeps_only_safe_properties() -> None:
    clean = sanitize_html(
        '<div style="background:url(https://t.example/x);COLOR: Red;position:fixed">a</div>'
        '<div style="background-color:#fff;border-top:u\\72l(https://t.example/y)">b</div>'
        '<div style="width:100%;behavior:url(x.htc)">c</div>'
    )

    assert (
        clean
        == '<div style="color:Red">a</div><div style="background-color:#fff">b</div><div>c</div>'
    )


def test_comments_are_stripped() -> None:
    markup = "<!--[if !mso]><!--><p>shown</p><!--<![endif]--><!-- secret --><p>kept</p>"

    assert sanitize_html(markup) == "<p>shown</p><p>kept</p>"


def test_malformed_markup_comes_out_well_formed() -> None:
    markup = '<div><p>one<p>two<b>bold<i>both</b></i><table><tr><td>cell<td>cell2</div><a href="'
    clean = sanitize_html(markup)

    assert clean == (
        "<div><p>one</p><p>two<b>bold<i>both</i></b></p>"
        "<table><tbody><tr><td>cell</td><td>cell2</td></tr></tbody></table></div>"
    )
    assert sanitize_html(clean) == clean


def test_nul_bytes_are_dropped() -> None:
    assert sanitize_html("<p>a\x00b</p><scr\x00ipt>alert(1)</script>") == "<p>ab</p>"
    assert html_to_text("a\x00b") == "ab"


def test_query_strings_that_look_like_entities_survive() -> None:
    clean = sanitize_html('<a href="https://e.example/?a=1&copy=2&amp;lang=en">x</a>')

    assert 'href="https://e.example/?a=1&amp;copy=2&amp;lang=en"' in clean


# --- html_to_text ------------------------------------------------------------------------


def test_outlook_reply_as_text() -> None:
    assert html_to_text(OUTLOOK_REPLY) == (
        "Hi Anna,\n"
        "\n"
        "The truck is at the dock, ETA 14:30.\n"
        "\n"
        "Regards,\n"
        "Jan\n"
        "\n"
        "From: Support <support@relay.example>\n"
        "Sent: Monday, 3 March 2025 09:12\n"
        "To: Jan <jan@fleet.example>\n"
        "Subject: Load 4411\n"
        "\n"
        "Where is the truck?"
    )


def test_gmail_reply_as_text() -> None:
    assert html_to_text(GMAIL_REPLY) == (
        "Thanks, delivered.\n"
        "\n"
        "Piet\n"
        "\n"
        "On Mon, 3 Mar 2025 at 09:12, Support <support@relay.example> wrote:\n"
        "> Where is the truck?\n"
        ">\n"
        "> Track it here <https://track.example/4411>."
    )


def test_apple_mail_reply_as_text() -> None:
    assert html_to_text(APPLE_MAIL_REPLY) == (
        "On my way.\n"
        "\n"
        "> On 3 Mar 2025, at 09:12, Support <support@relay.example> wrote:\n"
        ">\n"
        "> Where is the truck?\n"
        "> > Load 4411 is late."
    )


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("<p>One</p><p>Two</p>", "One\n\nTwo"),
        ("<div>One</div><div>Two</div>", "One\nTwo"),
        ("One<br>Two<br><br><br><br>Three", "One\nTwo\n\nThree"),
        ("<p>  lots   of\n\tspace  </p>", "lots of space"),
        ("<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>", "- one\n- two\n  - nested"),
        ("<ol start=3><li>three<li>four</ol>", "3. three\n4. four"),
        ('<a href="https://e.example/t">tracking</a>', "tracking <https://e.example/t>"),
        ('<a href="https://e.example/">https://e.example</a>', "https://e.example"),
        ('<a href="mailto:ops@fleet.example">ops@fleet.example</a>', "ops@fleet.example"),
        ('<a href="javascript:alert(1)">click</a>', "click"),
        ("<table><tr><th>Load</th><th>ETA</th></tr><tr><td>4411<td>14:30</table>",
         "Load | ETA\n4411 | 14:30"),
        ("<table><tr><td><p>Left</p><p>column</p></td><td>Right</td></tr></table>",
         "Left\n\ncolumn\nRight"),
        ("<blockquote>a<br>b<blockquote>c</blockquote></blockquote>", "> a\n> b\n> > c"),
        ("<p>Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5&nbsp;each</p>",
         "Fish & chips <3 été €5 each"),
        ("<pre>  indented\n    code</pre>", "  indented\n    code"),
        ("<h1>Title</h1>text<hr>after", "Title\n\ntext\n---\nafter"),
        ("<head><title>T</title><style>p{}</style></head><script>x()</script>body", "body"),
        ("<p>trailing   </p>\n\n<div>   </div>", "trailing"),
        ("", ""),
        ("plain text, no tags", "plain text, no tags"),
        ("<div>unclosed <b>bold <i>both", "unclosed bold both"),
        ("a < b and c > d", "a < b and c > d"),
    ],
)  # fmt: skip
def test_html_to_text(markup: str, text: str) -> None:
    assert html_to_text(markup) == text


# --- huge and hostile input --------------------------------------------------------------

# Quadratic parsing takes minutes on these; a linear one takes about a second.
_BUDGET_SECONDS = 5.0
_MEGABYTE = 1_000_000


def _realistic_megabyte() -> str:
    block = (
        '<div><p class=MsoNormal style="margin:0">Load <b>4411</b> at '
        '<a href="https://track.example/4411?a=1&amp;b=2">dock 7</a></p>'
        "<table><tr><td>ETA</td><td>14:30</td></tr></table>"
        "<blockquote>older<br>message</blockquote></div>\n"
    )
    return block * (_MEGABYTE // len(block) + 1)


HOSTILE_INPUTS: dict[str, Callable[[], str]] = {
    "realistic": _realistic_megabyte,
    "deeply nested divs": lambda: "<div>" * (_MEGABYTE // 5),
    "nested fonts with distinct attributes": lambda: "".join(
        f"<font color={i}>" for i in range(_MEGABYTE // 17)
    ),
    "misnested formatting re-opened per block": lambda: "".join(
        f"<div><font color={i}></div>" for i in range(_MEGABYTE // 28)
    ),
    "unterminated tag soup": lambda: "<a" * (_MEGABYTE // 2),
    "stray angle brackets": lambda: "<" * _MEGABYTE,
    "unclosed attribute quotes": lambda: "<p title='x>" * (_MEGABYTE // 12),
}


@pytest.mark.parametrize("name", HOSTILE_INPUTS)
def test_megabyte_inputs_return_quickly(name: str) -> None:
    markup = HOSTILE_INPUTS[name]()
    assert len(markup) >= _MEGABYTE * 0.9

    started = time.perf_counter()
    clean = sanitize_html(markup)
    text = html_to_text(markup)
    elapsed = time.perf_counter() - started

    assert elapsed < _BUDGET_SECONDS
    assert "<script" not in clean
    if name == "realistic":
        assert clean.count("<blockquote>") > 1000
        assert text.startswith("Load 4411 at dock 7 <https://track.example/4411?a=1&b=2>\n")
