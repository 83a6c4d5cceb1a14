"""Inbound HTML mail bodies: sanitise them for forwarding and render them as plain text."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from html import escape, unescape
from html.entities import html5 as _NAMED_REFERENCES
from urllib.parse import unquote

import nh3

# Why there is a tokenizer here at all: html5ever (inside nh3) is quadratic on crafted nesting
# (40k nested <font> with distinct attributes took two minutes; misnested formatting tags are
# re-opened in every block, multiplying the output), and CPython 3.11's HTMLParser is quadratic
# on input such as "<a<a<a…". So raw mail is tokenized here in linear time into a tree whose
# depth and number of open formatting elements are bounded, and only that tree's well-formed
# serialisation reaches nh3, which stays the security gate. The tokenizer follows the HTML5
# tokenizer where it is cheap to; where it differs, only fidelity suffers, never safety.

_MAX_DEPTH = 128  # deeper markup is flattened: its text is kept, its tags are not
_MAX_OPEN_FORMATTING = 24  # html5ever's per-tag work grows with this list
_IMPLIED_CLOSE_WINDOW = 8  # how far down the stack an implied end tag may reach

_VOID = frozenset({"br", "hr", "img", "wbr"})
_FORMATTING = frozenset(  # html5ever's "active formatting elements"
    {"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong"}
    | {"tt", "u"}
)
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_TABLE_PARTS = frozenset({"table", "caption", "thead", "tbody", "tfoot", "tr", "td", "th"})
# Everything kept in the tree; any other tag disappears and its content joins the parent.
_ELEMENTS = (
    _VOID
    | _FORMATTING
    | _HEADINGS
    | _TABLE_PARTS
    | {"p", "div", "span", "blockquote", "pre", "center", "sub", "sup", "ins", "del", "kbd"}
    | {"ul", "ol", "li", "dl", "dt", "dd", "cite", "q", "abbr", "mark", "samp", "var"}
    | {"section", "article", "header", "footer", "main", "nav", "aside", "address"}
    | {"figure", "figcaption", "details", "summary"}
)
# Start tags that end an open <p>, as html5ever does ("close a p element in button scope").
_CLOSES_P = _HEADINGS | {
    "address", "article", "aside", "blockquote", "center", "details", "div", "dl", "dd", "dt",
    "figcaption", "figure", "footer", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
    "section", "summary", "table", "ul",
}  # fmt: skip
# tag → (open elements it implicitly ends, elements the search for them must not pass)
_IMPLIED_END: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "li": (frozenset({"li"}), frozenset({"ul", "ol", "table", "td", "th"})),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl", "table", "td", "th"})),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl", "table", "td", "th"})),
    "tr": (frozenset({"tr"}), frozenset({"table", "thead", "tbody", "tfoot"})),
    "td": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "th": (frozenset({"td", "th"}), frozenset({"tr", "table"})),
    "thead": (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    "tbody": (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    "tfoot": (frozenset({"thead", "tbody", "tfoot"}), frozenset({"table"})),
    "a": (frozenset({"a"}), frozenset({"table", "td", "th"})),
}
_P_SCOPE_STOP = frozenset({"table", "td", "th", "caption"})
# Elements whose content is text to the tokenizer → whether that text is shown at all.
_RAW_TEXT = {
    "script": False, "style": False, "title": False, "xmp": False, "iframe": False,
    "noembed": False, "noframes": False, "textarea": True,
}  # fmt: skip
_RAW_TEXT_END = {
    name: re.compile(rf"</{name}(?=[\t\n\f />]|\Z)", re.IGNORECASE) for name in _RAW_TEXT
}

_MARKUP_START = re.compile(r"<[A-Za-z/!?]")  # any other "<" is text
_TAG_NAME = re.compile(r"[^\t\n\f />]*")
_BEFORE_ATTRIBUTE = re.compile(r"[\t\n\f /]*")
_ATTRIBUTE_NAME = re.compile(r"[^\t\n\f />][^\t\n\f />=]*")
_EQUALS = re.compile(r"[\t\n\f ]*=[\t\n\f ]*")
_UNQUOTED_VALUE = re.compile(r"[^\t\n\f >]*")
_COMMENT_END = re.compile(r"--!?>")
_CHARACTER_REFERENCE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")
_SAFE_NAME = re.compile(r"[a-z_:][a-z0-9_:.\-]*")
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
_URL_IGNORED = re.compile(r"[\x00-\x20\x7f]")  # browsers drop these before reading a scheme
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]*", re.I)
_UNSAFE_CSS = re.compile(r"url\s*\(|image-set|expression\s*\(|@import|\\", re.IGNORECASE)

_SANITIZED_TAGS = frozenset(
    {"p", "div", "span", "br", "b", "strong", "i", "em", "u", "s", "strike", "ul", "ol", "li"}
    | {"table", "caption", "thead", "tbody", "tfoot", "tr", "td", "th", "blockquote", "pre"}
    | {"code", "hr", "font", "center", "img", "a", "sub", "sup", "small", "big"}
    | _HEADINGS
)
_COMMON_ATTRIBUTES = frozenset({"title", "dir", "lang", "align", "style"})
_CELL_ATTRIBUTES = frozenset({"width", "height", "colspan", "rowspan", "valign", "bgcolor"})
_SANITIZED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "*": _COMMON_ATTRIBUTES,
    "a": frozenset({"href"}),
    "img": frozenset({"src", "alt", "width", "height"}),
    "table": frozenset({"width", "bgcolor", "border", "cellpadding", "cellspacing"}),
    "tr": frozenset({"valign", "bgcolor"}),
    "td": _CELL_ATTRIBUTES,
    "th": _CELL_ATTRIBUTES,
    "font": frozenset({"color", "face", "size"}),
    "ol": frozenset({"start"}),
}
_BOX_SIDES = ("", "-top", "-right", "-bottom", "-left")
_SAFE_STYLE_PROPERTIES = frozenset(
    {"color", "background-color", "font-weight", "font-style", "font-size", "font-family"}
    | {"text-align", "text-decoration", "border-collapse"}
    | {f"margin{side}" for side in _BOX_SIDES}
    | {f"padding{side}" for side in _BOX_SIDES}
    | {f"border{side}{part}" for side in _BOX_SIDES for part in ("", "-color", "-style", "-width")}
)
_LINK_REL = "noopener noreferrer nofollow"


@dataclass(eq=False)
class _Element:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[_Element | str] = field(default_factory=list)


def sanitize_html(
    html: str, *, inline_cids: Collection[str] = (), allow_remote_images: bool = False
) -> str:
    """Return `html` reduced to formatting that is safe to show and loads nothing remote.

    An <img> survives only if its source is one of `inline_cids` (a Content-ID, with or
    without angle brackets), an inline raster data: URL, or, with `allow_remote_images`,
    an http(s) URL; otherwise the whole element goes, tracking pixels included.
    """
    cids = frozenset(_normalize_cid(cid) for cid in inline_cids)
    image_allowed = partial(_image_allowed, cids=cids, allow_remote=allow_remote_images)
    cleaner = nh3.Cleaner(
        tags=_SANITIZED_TAGS,
        attributes=_SANITIZED_ATTRIBUTES,
        attribute_filter=partial(_filter_attribute, image_allowed=image_allowed),
        strip_comments=True,
        link_rel=_LINK_REL,
        # Apple Mail marks quotes with type="cite"; nothing else may carry a type.
        tag_attribute_values={"blockquote": {"type": {"cite"}}},
        url_schemes={"http", "https", "mailto", "cid", "data"},
        url_relative="deny",  # a mail has no base URL, so a relative one can only mislead
        filter_style_properties=_SAFE_STYLE_PROPERTIES,
    )
    parts: list[str] = []
    _serialize(_parse(html), parts, image_allowed)
    return cleaner.clean("".join(parts)).strip()


def html_to_text(html: str) -> str:
    """Render an HTML mail body as plain text, quotes prefixed with "> " line by line."""
    out = _Lines()
    _render_children(_parse(html), out, pre=False)
    return "\n".join(out.finish())


# --- tokenizer and tree -------------------------------------------------------------------


def _parse(markup: str) -> _Element:
    """Tokenize `markup` into a bounded tree; every step consumes input, so it is linear."""
    source = markup.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    end = len(source)
    builder = _TreeBuilder()
    pos = 0
    while pos < end:
        markup_start = _MARKUP_START.search(source, pos)
        lt = markup_start.start() if markup_start else end
        if lt > pos:
            builder.text(unescape(source[pos:lt]))
        pos = lt
        following = source[pos + 1 : pos + 2]
        if not following:
            break
        if following == "/":
            first = source[pos + 2 : pos + 3]
            if first in _ASCII_LETTERS:
                name_end = _match_end(_TAG_NAME, source, pos + 2)
                parsed = _read_attributes(source, name_end)
                if parsed is None:
                    break  # end of input inside a tag: html5ever drops the tag too
                builder.end(source[pos + 2 : name_end].lower())
                pos = parsed[1]
            elif first == ">":
                pos += 3
            elif not first:
                builder.text("</")
                pos = end
            else:
                pos = _past_next_gt(source, pos + 2)
        elif following == "!":
            if source.startswith("!--", pos + 1):
                pos = _past_comment(source, pos + 4)
            else:  # <!DOCTYPE>, Outlook's <![if …]>, CDATA: all bogus comments in HTML
                pos = _past_next_gt(source, pos + 2)
        elif following == "?":
            pos = _past_next_gt(source, pos + 2)
        else:
            pos = _start_tag(source, pos + 1, builder)
    return builder.finish()


def _start_tag(source: str, name_start: int, builder: _TreeBuilder) -> int:
    name_end = _match_end(_TAG_NAME, source, name_start)
    name = source[name_start:name_end].lower()
    parsed = _read_attributes(source, name_end)
    if parsed is None:
        return len(source)
    attrs, pos = parsed
    if name == "plaintext":  # everything after it is text, as in a browser
        builder.text(source[pos:])
        return len(source)
    if name not in _RAW_TEXT:
        builder.start(name, attrs)
        return pos
    closing = _RAW_TEXT_END[name].search(source, pos)
    content_end = closing.start() if closing else len(source)
    if _RAW_TEXT[name]:
        builder.text(unescape(source[pos:content_end]))
    if closing is None:
        return len(source)
    after = _read_attributes(source, closing.end())
    return len(source) if after is None else after[1]


def _read_attributes(source: str, pos: int) -> tuple[dict[str, str], int] | None:
    """Read attributes up to and past the closing ">"; None if the input ends first."""
    if source.startswith(">", pos):  # the common bare tag, without the regex work
        return {}, pos + 1
    attrs: dict[str, str] = {}
    end = len(source)
    while True:
        pos = _match_end(_BEFORE_ATTRIBUTE, source, pos)
        if pos >= end:
            return None
        if source[pos] == ">":
            return attrs, pos + 1
        name_match = _ATTRIBUTE_NAME.match(source, pos)
        assert name_match is not None  # source[pos] is none of whitespace, "/" or ">"
        pos = name_match.end()
        value = ""
        equals = _EQUALS.match(source, pos)
        if equals:
            pos = equals.end()
            if pos >= end:
                return None
            quote = source[pos]
            if quote in "\"'":
                closing = source.find(quote, pos + 1)
                if closing < 0:
                    return None
                value = source[pos + 1 : closing]
                pos = closing + 1
            elif quote != ">":
                value_end = _match_end(_UNQUOTED_VALUE, source, pos)
                value = source[pos:value_end]
                pos = value_end
            value = _unescape_attribute(value)
        attrs.setdefault(name_match.group().lower(), value)  # the first duplicate wins


def _match_end(pattern: re.Pattern[str], source: str, pos: int) -> int:
    """Where a pattern that may match nothing stops matching at `pos`."""
    match = pattern.match(source, pos)
    return match.end() if match else pos


def _unescape_attribute(value: str) -> str:
    # In attributes, a legacy reference without ";" stays literal before "=" (HTML5 §13.2.5.73),
    # so "?a=1&copy=2" keeps its query; html.unescape would turn it into "?a=1©=2".
    if "&" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        reference = match.group(1)
        if reference.startswith("#") or reference.endswith(";"):
            return unescape(match.group())
        if value[match.end() : match.end() + 1] == "=":
            return match.group()
        return _NAMED_REFERENCES.get(reference, match.group())

    return _CHARACTER_REFERENCE.sub(replace, value)


def _past_comment(source: str, body: int) -> int:
    if source.startswith(">", body):
        return body + 1
    if source.startswith("->", body):
        return body + 2
    closing = _COMMENT_END.search(source, body)
    return closing.end() if closing else len(source)


def _past_next_gt(source: str, pos: int) -> int:
    gt = source.find(">", pos)
    return len(source) if gt < 0 else gt + 1


class _TreeBuilder:
    """Stack of open elements with the few implied end tags that mail markup relies on."""

    def __init__(self) -> None:
        self._root = _Element("#root")
        self._stack = [self._root]
        self._open: dict[str, int] = {}
        self._open_formatting = 0

    def text(self, data: str) -> None:
        if data:
            self._stack[-1].children.append(data)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if tag not in _ELEMENTS:
            return
        if tag in _CLOSES_P and self._open.get("p"):
            self._close_nearby(frozenset({"p"}), _P_SCOPE_STOP)
        implied = _IMPLIED_END.get(tag)
        if implied is not None:
            self._close_nearby(*implied)
        element = _Element(tag, attrs)
        if tag in _VOID:
            self._stack[-1].children.append(element)
            return
        if len(self._stack) > _MAX_DEPTH:
            return
        if tag in _FORMATTING:
            if self._open_formatting >= _MAX_OPEN_FORMATTING:
                return
            self._open_formatting += 1
        self._stack[-1].children.append(element)
        self._stack.append(element)
        self._open[tag] = self._open.get(tag, 0) + 1

    def end(self, tag: str) -> None:
        if tag == "br":  # browsers read a stray </br> as <br>
            self.start("br", {})
        elif self._open.get(tag):
            # Each element is popped at most once, so this loop is linear overall.
            while self._pop().tag != tag:
                pass

    def finish(self) -> _Element:
        return self._root

    def _close_nearby(self, targets: frozenset[str], stops: frozenset[str]) -> None:
        # A bounded look keeps this O(1) per tag; misses only cost fidelity.
        for depth in range(1, min(_IMPLIED_CLOSE_WINDOW, len(self._stack) - 1) + 1):
            tag = self._stack[-depth].tag
            if tag in targets:
                for _ in range(depth):
                    self._pop()
                return
            if tag in stops:
                return

    def _pop(self) -> _Element:
        element = self._stack.pop()
        self._open[element.tag] -= 1
        if element.tag in _FORMATTING:
            self._open_formatting -= 1
        return element


# --- sanitising ---------------------------------------------------------------------------


def _serialize(element: _Element, parts: list[str], image_allowed: Callable[[str], bool]) -> None:
    for child in element.children:
        if isinstance(child, str):
            parts.append(escape(child, quote=False))
            continue
        if child.tag == "img" and not image_allowed(child.attrs.get("src", "")):
            continue  # no empty <img> left behind: it would still show a broken-image box
        parts.append(f"<{child.tag}")
        for name, value in child.attrs.items():
            if _SAFE_NAME.fullmatch(name):
                parts.append(f' {name}="{escape(value)}"')
        parts.append(">")
        if child.tag not in _VOID:
            _serialize(child, parts, image_allowed)
            parts.append(f"</{child.tag}>")


def _filter_attribute(
    tag: str, attribute: str, value: str, *, image_allowed: Callable[[str], bool]
) -> str | None:
    if attribute == "href":
        return value if _url_scheme(value) in _LINK_SCHEMES else None
    if attribute == "src":
        return value if tag == "img" and image_allowed(value) else None
    if attribute == "style":
        return _filter_style(value)
    return value


def _filter_style(value: str) -> str | None:
    # nh3 also keeps only allowed properties, but compares names case-sensitively, leaves an
    # empty style="" behind, and does not look at values: none of the allowed properties takes
    # an image, yet a url() must never reach the reader, nor a CSS escape that could spell one.
    declarations = []
    for declaration in value.split(";"):
        name, colon, rest = declaration.partition(":")
        name = name.strip().lower()
        if colon and name in _SAFE_STYLE_PROPERTIES and not _UNSAFE_CSS.search(rest):
            declarations.append(f"{name}:{rest.strip()}")
    return ";".join(declarations) or None


def _image_allowed(src: str, *, cids: frozenset[str], allow_remote: bool) -> bool:
    url = _URL_IGNORED.sub("", src)
    scheme = _url_scheme(url)
    if scheme == "cid":
        return _normalize_cid(unquote(url[4:])) in cids
    if scheme == "data":
        return _DATA_IMAGE.fullmatch(url) is not None
    return allow_remote and scheme in {"http", "https"}


def _normalize_cid(cid: str) -> str:
    return cid.strip().removeprefix("<").removesuffix(">").strip().lower()


def _url_scheme(url: str) -> str | None:
    match = _URL_SCHEME.match(_URL_IGNORED.sub("", url))
    return match.group(1).lower() if match else None


# --- plain text ---------------------------------------------------------------------------

_WHITESPACE_RUN = re.compile(r"[ \t\n\f]+")
_SCHEME_PREFIX = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
_PARAGRAPHS = _HEADINGS | {"p", "pre"}
_LINE_BLOCKS = frozenset(
    {"div", "center", "section", "article", "header", "footer", "main", "nav", "aside"}
    | {"address", "figure", "figcaption", "details", "summary", "dl", "dt", "dd", "caption"}
    | {"thead", "tbody", "tfoot", "tr", "td", "th"}
)


class _Lines:
    """Plain-text output: finished lines plus the inline pieces of the line being built."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._pieces: list[str] = []

    def inline(self, text: str, *, pre: bool) -> None:
        if pre:
            first, *rest = text.split("\n")
            self._pieces.append(first)
            for line in rest:
                self.line_break()
                self._pieces.append(line)
            return
        text = _WHITESPACE_RUN.sub(" ", text)
        if text.startswith(" ") and (not self._pieces or self._pieces[-1].endswith(" ")):
            text = text[1:]
        if text:
            self._pieces.append(text)

    def line_break(self) -> None:
        self.lines.append("".join(self._pieces).replace("\xa0", " ").rstrip())
        self._pieces = []

    def block_break(self) -> None:
        if self._pieces:
            self.line_break()

    def blank_line(self) -> None:
        self.block_break()
        if self.lines and self.lines[-1]:
            self.lines.append("")

    def add_lines(self, lines: list[str]) -> None:
        self.block_break()
        self.lines.extend(lines)

    def mark(self) -> tuple[int, int]:
        return len(self.lines), len(self._pieces)

    def text_since(self, mark: tuple[int, int]) -> str:
        lines, pieces = mark
        if len(self.lines) == lines:
            return "".join(self._pieces[pieces:])
        return " ".join(self.lines[lines:]) + "".join(self._pieces)

    def finish(self) -> list[str]:
        """The lines with blank runs collapsed to one and no blank line at either end."""
        self.block_break()
        lines: list[str] = []
        for line in self.lines:
            if line or (lines and lines[-1]):
                lines.append(line)
        while lines and not lines[-1]:
            lines.pop()
        return lines


def _render_children(element: _Element, out: _Lines, *, pre: bool) -> None:
    for child in element.children:
        if isinstance(child, str):
            out.inline(child, pre=pre)
        else:
            _render_element(child, out, pre=pre)


def _render_block(element: _Element, *, pre: bool) -> list[str]:
    inner = _Lines()
    _render_children(element, inner, pre=pre)
    return inner.finish()


def _render_element(element: _Element, out: _Lines, *, pre: bool) -> None:
    tag = element.tag
    if tag == "br":
        out.line_break()
    elif tag == "hr":
        out.add_lines(["---"])
    elif tag == "img":
        pass
    elif tag == "a":
        _render_link(element, out, pre=pre)
    elif tag == "blockquote":
        quoted = _render_block(element, pre=pre)
        out.add_lines([f"> {line}" if line else ">" for line in quoted])
    elif tag in {"ul", "ol"}:
        _render_list(element, out, pre=pre)
    elif tag == "li":  # an item outside any list still reads as one
        _render_item(element, "-", out, pre=pre)
    elif tag == "table":
        _render_table(element, out, pre=pre)
    elif tag in _PARAGRAPHS and not _is_outlook_line(element):
        out.blank_line()
        _render_children(element, out, pre=pre or tag == "pre")
        out.blank_line()
    elif tag in _LINE_BLOCKS or tag == "p":
        out.block_break()
        _render_children(element, out, pre=pre)
        out.block_break()
    else:
        _render_children(element, out, pre=pre)


def _is_outlook_line(element: _Element) -> bool:
    # Outlook writes every line as <p class=MsoNormal> with zero margins and marks blank lines
    # with an empty paragraph, so its paragraphs read as lines, not as blank-separated blocks.
    return element.tag == "p" and element.attrs.get("class", "").lower().startswith("mso")


def _render_link(element: _Element, out: _Lines, *, pre: bool) -> None:
    href = element.attrs.get("href", "").strip()
    mark = out.mark()
    _render_children(element, out, pre=pre)
    if _url_scheme(href) not in _LINK_SCHEMES:
        return
    text = out.text_since(mark).replace("\xa0", " ").strip().lower().rstrip("/")
    target = href.lower().rstrip("/")
    if text not in {target, _SCHEME_PREFIX.sub("", target)}:
        out.inline(f" <{href}>", pre=False)


def _render_list(element: _Element, out: _Lines, *, pre: bool) -> None:
    out.block_break()
    number = _list_start(element)
    for child in element.children:
        if isinstance(child, _Element) and child.tag == "li":
            marker = f"{number}." if element.tag == "ol" else "-"
            number += 1
            _render_item(child, marker, out, pre=pre)
        elif isinstance(child, str):
            out.inline(child, pre=pre)
        else:
            _render_element(child, out, pre=pre)
    out.block_break()


def _list_start(element: _Element) -> int:
    try:
        return int(element.attrs.get("start", "1"))
    except ValueError:
        return 1


def _render_item(element: _Element, marker: str, out: _Lines, *, pre: bool) -> None:
    lines = _render_block(element, pre=pre)
    if not lines:
        return
    indent = " " * (len(marker) + 1)
    out.add_lines(
        [f"{marker} {lines[0]}"] + [f"{indent}{line}" if line else "" for line in lines[1:]]
    )


def _render_table(element: _Element, out: _Lines, *, pre: bool) -> None:
    out.block_break()
    for child in element.children:
        if isinstance(child, str):
            out.inline(child, pre=pre)
        elif child.tag in {"thead", "tbody", "tfoot"}:
            _render_table(child, out, pre=pre)
        elif child.tag == "tr":
            _render_row(child, out, pre=pre)
        else:
            _render_element(child, out, pre=pre)
    out.block_break()


def _render_row(row: _Element, out: _Lines, *, pre: bool) -> None:
    cells = [
        _render_block(child, pre=pre) if isinstance(child, _Element) else [child.strip()]
        for child in row.children
    ]
    filled = [cell for cell in cells if cell and any(cell)]
    if all(len(cell) == 1 for cell in filled):
        out.add_lines([" | ".join(cell[0] for cell in filled)] if filled else [])
    else:  # a layout table: cells holding paragraphs read better one after another
        for cell in filled:
            out.add_lines(cell)
