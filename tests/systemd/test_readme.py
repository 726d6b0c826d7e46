"""README's "Operating it under systemd" shows what these tests run."""

from .conftest import (README_DROPIN, README_INSTALL, README_SECRET_IN_PLACE, README_SECRETS,
                       README_START, REPO)


def test_readme_shows_the_commands_the_tests_run():
    text = (REPO / "README.md").read_text()
    section = text.split("## Operating it under systemd", 1)[1].split("\n## ", 1)[0]
    shown = [line[4:] for line in section.splitlines() if line.startswith("    ")]
    lines = list(README_INSTALL) + list(README_START) + README_DROPIN.splitlines()
    for _, secret_lines in README_SECRETS.values():
        lines += secret_lines
    missing = [line for line in lines if line not in shown]
    assert not missing, missing
    assert f"`{README_SECRET_IN_PLACE}`" in section
