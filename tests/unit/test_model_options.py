"""Every model checks its --model-arg options in the Model base class: no adapter can forget to
refuse a typo or a value of the wrong type. Model names are given once, to classes."""
import pytest

from qbench import Model, ModelConfig, ModelError, register_model
from qbench.cli.main import main
from qbench.core.registry import MODEL_FAMILIES, MODELS, RegistryError, create_model, load_plugins

load_plugins()
EVERY_MODEL = sorted(MODELS) + [f"{family}:member" for family in sorted(MODEL_FAMILIES)]


@pytest.mark.parametrize("name", EVERY_MODEL)
def test_every_registered_model_refuses_an_unknown_option(name):
    with pytest.raises(ModelError, match=r"unknown --model-arg lower_beter; accepted: "):
        create_model(name, ModelConfig(options={"lower_beter": True}))


@pytest.mark.parametrize("value", ["maybe", 3, "1.5"])
def test_a_switch_takes_true_or_false_only(tmp_path, value):
    predictions = tmp_path / "p.csv"
    predictions.write_text("image,score\na.png,1\n")
    with pytest.raises(ModelError, match=r"precomputed: --model-arg lower_better=.*expected true "
                                         r"or false"):
        create_model("precomputed", ModelConfig(model_path=predictions,
                                                options={"lower_better": value}))


def test_precomputed_reads_its_declared_options(tmp_path):
    predictions = tmp_path / "p.csv"
    predictions.write_text("image,score\na.png,1\n")
    model = create_model("precomputed", ModelConfig(model_path=predictions,
                                                    options={"lower_better": True,
                                                             "mos_scale": True}))
    assert model.lower_better is True and model.score_range == (1.0, 5.0)


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    code = main(["run", "--model", "stats", "--model-arg", "lower_beter=true", "--no-progress",
                 "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "unknown --model-arg lower_beter" in err and "accepted: none" in err


def test_models_register_as_classes_and_each_name_once():
    with pytest.raises(RegistryError, match="decorates a Model subclass"):
        register_model("a-function")(lambda config: None)

    class Other(Model):
        def predict(self, samples, images):
            return []
    with pytest.raises(RegistryError, match="'stats' is taken by"):
        register_model("stats")(Other)
    assert MODELS["stats"].__name__ == "StatsModel"
