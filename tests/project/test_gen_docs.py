"""scripts/gen_docs.py --check: the committed reference pages are what the code generates now,
whatever the terminal, and a change to a setting, a flag or the proto makes them stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rmserve.server.settings import ServerSettings
from tests.support.scripts_loader import ROOT, load_script

gen_docs = load_script("gen_docs")
SETTINGS = "docs/reference/settings.md"
CLI = "docs/reference/cli.md"
PROTO = "docs/reference/proto.md"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return gen_docs.pages()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of protos/ and the committed reference pages."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "docs" / "reference", tmp_path / "docs" / "reference")
    return tmp_path


def test_committed_pages_are_current() -> None:
    assert gen_docs.stale_pages() == [], "run `python scripts/gen_docs.py` and commit the pages"


def test_the_terminal_width_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "41")
    assert gen_docs.stale_pages() == []


def test_a_changed_setting_description_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    field = ServerSettings.model_fields["grace_seconds"]
    monkeypatch.setattr(field, "description", "How long draining may take.")
    # the description is both the settings row and the flag's --help text
    assert gen_docs.stale_pages() == [SETTINGS, CLI]


def test_a_changed_default_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ServerSettings.model_fields["max_batch_size"], "default", 64)
    assert SETTINGS in gen_docs.stale_pages()


def test_a_changed_proto_comment_is_stale(tree: Path) -> None:
    proto = tree / "protos" / "rmserve" / "v1" / "reward.proto"
    text = proto.read_text()
    old = "// Reward of one (prompt, response) pair."
    assert old in text
    proto.write_text(text.replace(old, "// The reward of one pair."))
    assert gen_docs.stale_pages(tree) == [PROTO]


def test_a_missing_or_edited_page_is_stale(tree: Path) -> None:
    (tree / CLI).unlink()
    settings = tree / SETTINGS
    settings.write_text(settings.read_text().replace("`RMSERVE_PORT`", "`RMSERVE_PORTS`"))
    assert gen_docs.stale_pages(tree) == [SETTINGS, CLI]


def test_every_field_of_every_settings_class_has_a_row(generated: dict[str, str]) -> None:
    page = generated[SETTINGS]
    classes = gen_docs.settings_classes()
    assert len(classes) == 4
    for spec in classes:
        prefix = spec.cls.model_config["env_prefix"]
        assert f"`{spec.cls.__module__}.{spec.cls.__name__}`" in page
        for name in spec.cls.model_fields:
            assert f"| `{name}` |" in page and f"`{prefix}{name.upper()}`" in page, name


def test_flags_come_from_the_real_parser(generated: dict[str, str]) -> None:
    page = generated[SETTINGS]
    assert "| `port` | `--port` (serve) | `RMSERVE_PORT` |" in page
    # a client setting offered as a flag by three commands, and one read from the environment only
    assert "| `target` | `--target` (loadtest, prefer, score) |" in page
    assert "| `token` | — | `RMSERVE_CLIENT_TOKEN` |" in page
    assert "`--log-request-content / --no-log-request-content` (serve)" in page


def test_every_subcommand_has_its_help(generated: dict[str, str]) -> None:
    page = generated[CLI]
    commands = gen_docs.subcommands(gen_docs.build_parser())
    assert {"serve", "train", "import-hf", "loadtest", "score"} <= set(commands)
    for command in commands:
        assert f"## rmserve {command}\n" in page
        assert f"usage: rmserve {command} " in page


def test_pages_name_no_path_of_this_machine(generated: dict[str, str]) -> None:
    for path, text in generated.items():
        assert str(ROOT) not in text, path
        assert "/tmp/" not in text, path


def test_proto_page_has_every_method_and_message(generated: dict[str, str]) -> None:
    page = generated[PROTO]
    for method in ("Score", "ScoreBatch", "Prefer", "PreferBatch", "GetModelInfo", "ScoreGroup"):
        assert f"| `{method}` |" in page
    for message in ("ScoreRequest", "ModelInfo", "ScoreGroupResponse", "ParityReport"):
        assert f"### {message}\n" in page
