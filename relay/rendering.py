"""One Jinja environment for every email: autoescaped HTML, StrictUndefined, templates on disk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape


def templates_dir() -> Path:
    """`templates/` of a source checkout, or its copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_templates", here.parent / "templates"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError("support-relay templates are missing from this installation")


def _when(value: datetime) -> str:
    return value.strftime("%a %d %b %Y, %H:%M %Z")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class Renderer:
    """Renders `<event>/<audience>.{subject,txt,html}.j2` with a shared layout."""

    def __init__(self, directory: Path | None = None) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory or templates_dir()),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates are read once: with reloading on, every email stat()ed each of its
            # templates and the layout on disk. Edited templates take effect on restart.
            auto_reload=False,
        )
        self.env.filters["when"] = _when

    def render(self, event: str, audience: str, **context: Any) -> RenderedEmail:
        def one(kind: str) -> str:
            return self.env.get_template(f"{event}/{audience}.{kind}.j2").render(**context)

        return RenderedEmail(subject=one("subject").strip(), text=one("txt"), html=one("html"))
