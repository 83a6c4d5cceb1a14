"""The email templates: read once per process, as the README's layout note says."""

from __future__ import annotations

import shutil
from pathlib import Path

from relay.rendering import Renderer, templates_dir


def test_templates_are_read_once_and_an_edit_waits_for_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "templates"
    shutil.copytree(templates_dir(), directory)
    subject = directory / "reply" / "partner.subject.j2"
    subject.write_text("First {{ ticket_id }}\n")
    renderer = Renderer(directory)
    assert renderer.render("reply", "partner", **context()).subject == "First 7"
    subject.write_text("Edited {{ ticket_id }}\n")
    # A running relay keeps what it read (no stat of every template for every email)...
    assert renderer.render("reply", "partner", **context()).subject == "First 7"
    # ...and a restarted one reads the edit.
    assert Renderer(directory).render("reply", "partner", **context()).subject == "Edited 7"


def context() -> dict[str, object]:
    class Ticket:
        id = 7
        subject = "Lost umbrella"

    return {
        "ticket_id": 7,
        "ticket": Ticket(),
        "body": "Found it.",
        "quoted": "",
        "html": "",
        "author_name": "Dispatch",
        "brand": "Relay",
    }
