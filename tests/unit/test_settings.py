import pytest

from qbench.cli.main import main
from qbench.core.settings import UserSettings, user_settings
from qbench.data.fetch import weights_path


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    monkeypatch.setenv("QBENCH_CONFIG", str(path))
    monkeypatch.delenv("QBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("QBENCH_MODEL_ROOT", raising=False)
    return path


def test_config_file_then_environment(config_file, tmp_path, monkeypatch):
    config_file.write_text(f"data_root: {tmp_path / 'data'}\nmodel_root: {tmp_path / 'models'}\n"
                           f"data:\n  koniq: {tmp_path / 'k'}\n"
                           f"models:\n  qinsight: {tmp_path / 'q'}\n")
    settings = user_settings()
    assert settings.data_root == tmp_path / "data" and settings.data["koniq"] == tmp_path / "k"
    assert weights_path("qinsight", "Q-Insight") == tmp_path / "q"
    assert weights_path("other", "Other/w") == tmp_path / "models" / "Other/w"
    assert weights_path("other", None) is None
    assert weights_path("qinsight", "Q-Insight", tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.setenv("QBENCH_DATA_ROOT", str(tmp_path / "env"))
    assert user_settings().data_root == tmp_path / "env"


@pytest.mark.parametrize("text,message", [
    ("data_root: [unclosed", "config file"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_config_is_one_line(config_file, capsys, text, message):
    config_file.write_text(text)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text,line", [
    ("data_root: {a: 1}\n", "data_root: should be a path (text), got {'a': 1}"),
    ("model_root: 12\n", "model_root: should be a path (text), got 12"),
    ("data: {koniq: [1, 2]}\n", "data.koniq: should be a path (text), got [1, 2]"),
    ("data: /x\n", "data: should be a valid dictionary (got '/x')"),
    ("dataroot: /x\n", "dataroot: unknown key; known: data_root, model_root, data, models, sources"),
    ("data_root: /a\ndata_root: /b\n", "line 2: data_root: key given twice (first on line 1)"),
    ("- a\n- b\n", "expected a mapping of settings (data_root, model_root, data, models, sources), got "
                   "list"),
])
def test_a_bad_setting_is_refused_naming_the_file_and_key(config_file, capsys, text, line):
    config_file.write_text(text)
    assert main(["list"]) == 2
    err = " ".join(capsys.readouterr().err.split())   # the console wraps long lines
    assert err == f"qbench: error: config file {config_file}: {line}"


def test_a_binary_or_unreadable_config_file_is_named(config_file, capsys):
    config_file.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    assert main(["list"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err == f"qbench: error: config file {config_file}: not a text file (byte 7 is NUL): " \
                  f"binary?"
    # a FIFO as the config file: tests/unit/test_userfiles.py (under a time limit)


def test_empty_sections_and_an_empty_file_are_no_settings(config_file, tmp_path):
    config_file.write_text("data:\nmodels:\n")
    assert user_settings().data == {} and user_settings().models == {}
    config_file.write_text("")
    assert user_settings() == UserSettings(source=str(config_file))
    config_file.unlink()
    assert user_settings() == UserSettings()
