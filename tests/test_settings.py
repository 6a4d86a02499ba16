import pytest

from qbench.cli import main
from qbench.settings import user_settings, weights_path


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    monkeypatch.setenv("QBENCH_CONFIG", str(path))
    monkeypatch.delenv("QBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("QBENCH_MODEL_ROOT", raising=False)
    return path


def test_config_file_then_environment(config_file, tmp_path, monkeypatch):
    config_file.write_text(f"data_root: {tmp_path / 'data'}\nmodel_root: {tmp_path / 'models'}\n"
                           f"data:\n  koniq: {tmp_path / 'k'}\nmodels:\n  qinsight: {tmp_path / 'q'}\n")
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
    ("dataroot: /x\n", "unknown keys"),
    ("data: /x\n", "'data' must map"),
])
def test_bad_config_is_one_line(config_file, capsys, text, message):
    config_file.write_text(text)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
