"""The README documents every setting: a limit nobody can find is not configurable."""

from __future__ import annotations

import re
from pathlib import Path

from relay.config import Settings

README = Path(__file__).parent.parent / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for row in re.findall(r"^\| (`RELAY_[^|]+)\|", table, flags=re.M):
        names = re.findall(r"`(RELAY_\w+|_\w+)`", row)
        stem = ""
        for name in names:
            if name.startswith("RELAY_"):
                documented.add(name)
                stem = name.rsplit("_", 1)[0]
            else:  # `RELAY_X_BASE` / `_MAX` shorthand
                documented.add(stem + name)
    expected = {f"RELAY_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from README's table"
    assert documented - expected == set(), "README documents settings that do not exist"
