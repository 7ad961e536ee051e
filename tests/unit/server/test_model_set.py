"""Which models a server serves: --artifact, repeated --model NAME=PATH, a TOML models file,
and the default; every mistake refused with a message that names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rmserve.artifact.manifest import ArtifactError
from rmserve.server.model_set import ModelSource, check_names, model_set, read_models_file
from rmserve.server.settings import ServerSettings
from tests.unit.server.test_settings import serve_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RMSERVE_"):
            monkeypatch.delenv(name)


def test_flags_name_models_in_order_and_the_artifact_stays_the_default() -> None:
    s = serve_settings(["--artifact", "/a", "--model", "safe=/s", "--model", "qwen=/q"])
    assert s.models == {"safe": Path("/s"), "qwen": Path("/q")}
    chosen = model_set(s)
    assert chosen.sources == [
        ModelSource(None, Path("/a")),
        ModelSource("safe", Path("/s")),
        ModelSource("qwen", Path("/q")),
    ]
    assert chosen.default is None  # the first source: the artifact, by its manifest name
    assert model_set(serve_settings(["--model", "safe=/s", "--default-model", "safe"])).default == (
        "safe"
    )


def test_models_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMSERVE_MODELS", '{"helpful": "/h", "safe": "/s"}')
    assert ServerSettings().models == {"helpful": Path("/h"), "safe": Path("/s")}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "--artifact / RMSERVE_ARTIFACT"),
        (["--model", "a=/x", "--model", "a=/y"], "--model a= given twice"),
        (["--model", "noequals"], "--model takes NAME=PATH"),
        (["--model", "bad name=/x"], "invalid setting --model / RMSERVE_MODELS"),
        (["--artifact", "/a", "--default-model", "no/slash"], "model name 'no/slash'"),
    ],
)
def test_mistakes_are_refused_by_name(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        serve_settings(argv)
    assert says in str(info.value) + capsys.readouterr().err


def test_a_models_file_names_models_relative_to_itself(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text('default = "safe"\n[models]\nhelpful = "h"\nsafe = "/abs/s"\n')
    models, default = read_models_file(file)
    assert models == {"helpful": tmp_path / "h", "safe": Path("/abs/s")} and default == "safe"
    chosen = model_set(ServerSettings(models_file=file))
    assert [s.name for s in chosen.sources] == ["helpful", "safe"] and chosen.default == "safe"
    with_artifact = model_set(ServerSettings(artifact=Path("/a"), models_file=file))
    assert with_artifact.default is None  # the artifact stays the default


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[models]\n", "needs a [models] table"),
        ("[models]\nx = 1\n", "models.x must be a path string"),
        ('[models]\n"a b" = "/x"\n', "model name 'a b'"),
        ('extra = 1\n[models]\nx = "/x"\n', "unknown keys ['extra']"),
        ("[models\n", "models_file"),
    ],
)
def test_a_bad_models_file_says_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    file = tmp_path / "models.toml"
    file.write_text(text)
    with pytest.raises(ArtifactError) as info:
        read_models_file(file)
    assert says in str(info.value) and str(file) in str(info.value)


def test_names_are_served_once_and_the_default_must_be_one_of_them() -> None:
    check_names(["a", "b"], "b")
    with pytest.raises(ArtifactError, match="model 'a' is named twice"):
        check_names(["a", "a"], "a")
    with pytest.raises(
        ArtifactError, match="default_model 'c' is not one of the served models: a, b"
    ):
        check_names(["a", "b"], "c")
