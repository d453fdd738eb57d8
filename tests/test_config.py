"""Campaign configuration: TOML validation, errors naming key and file, CLI overrides."""

import pytest

from openended.config import CampaignConfig, ConfigError, load_config


def test_defaults_need_nothing():
    cfg = load_config(None)
    assert cfg.task == "maze-medium"
    assert cfg.db_path().name == "maze-medium-seed0.db"


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('task = "maze-hard"\n[budget]\nmax_childs = 3\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "budget.max_childs" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("key, value, near", [
    ("max_inflight", 3, "max_in_flight"), ("budget.max_childen", 3, "max_children"),
    ("sandbox.memmory_mb", 64, "memory_mb"), ("llm.models", [{"name": "a", "base_url": "http://h/v1", "model": "m",
                                                              "timout_s": 3}], "timeout_s"),
    ("zzz", 1, None)])
def test_a_misspelt_key_gets_the_nearest_valid_one_of_its_table(key, value, near):
    with pytest.raises(ConfigError) as err:
        load_config(None, {key: value})
    message = str(err.value)
    assert "unknown key" in message
    assert (f"(did you mean '{near}'?)" in message) if near else ("did you mean" not in message)


def test_wrong_type_names_key_and_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('max_in_flight = "many"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "max_in_flight" in str(err.value) and str(path) in str(err.value)


def test_unknown_archive_kind_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[archive]\nkind = "kd"\n')
    with pytest.raises(ConfigError, match="archive.kind"):
        load_config(path)


def test_invalid_toml_names_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("task = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 3\n[budget]\nmax_children = 10\n[selection]\nstrategy = "uniform"\n')
    cfg = load_config(path, {"budget.max_children": 99, "selection.strategy": "tournament", "seed": None})
    assert cfg.budget.max_children == 99
    assert cfg.selection.strategy == "tournament"
    assert cfg.seed == 3


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/campaign.toml")


def test_round_trip_through_dump():
    cfg = CampaignConfig(task="maze-hard", seed=4)
    assert CampaignConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize("text, key", [
    ('[selection]\nstrategy = "tournament"\nparams = { sizee = 3 }\n', "selection.params"),
    ('[mutation]\nparams = { sigmaa = 9 }\n', "mutation.params"),
    ('seed = "5"\n', "seed"),
    ('[budget]\nstop_at_target = "yes"\n', "budget.stop_at_target"),
])
def test_parameter_tables_and_types_are_checked(tmp_path, text, key):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_flag_into_a_scalar_key_is_a_config_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("budget = 5\n")
    with pytest.raises(ConfigError, match="'budget' must be a table"):
        load_config(path, {"budget.max_children": 10})


@pytest.mark.parametrize(("table", "message"), [
    ('[selection]\nstrategy = "novelty"\nparams = { power = "x" }\n', "novelty power must be a number > 0, got 'x'"),
    ('[selection]\nstrategy = "novelty"\nparams = { recent = -5 }\n', "novelty recent must be an integer >= 0"),
    ('[selection]\nstrategy = "tournament"\nparams = { size = 0 }\n', "tournament size must be an integer >= 1"),
    ('[selection]\nstrategy = "clade"\nparams = { prior = 0.0 }\n', "clade prior must be a number > 0"),
    ('[mutation]\noperator = "gaussian"\nparams = { sigma = -0.3 }\n', "sigma must be a finite number >= 0"),
    ('[mutation]\noperator = "ast"\nparams = { edits = 0 }\n', "edits must be an integer >= 1"),
    ('[mutation]\noperator = "ast"\nparams = { kinds = ["nope"] }\n', "AST edit kinds must be"),
])
def test_a_parameter_value_a_strategy_or_operator_cannot_take_is_a_config_error(tmp_path, table, message):
    """Before anything is created: such a value once failed every child, or crashed the first selection and
    left a campaign that could not resume with the value mended."""
    path = tmp_path / "c.toml"
    path.write_text(table)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    key = "selection.params" if table.startswith("[selection]") else "mutation.params"
    assert message in text and key in text and str(path) in text, text


def test_the_default_parameters_pass(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[selection]\nstrategy = "novelty"\nparams = { power = 2, recent = 0, eps = 0.0 }\n'
                    '[mutation]\noperator = "gaussian"\nparams = { sigma = 0 }\n')
    cfg = load_config(path)
    assert cfg.selection.params["power"] == 2 and cfg.mutation.params["sigma"] == 0


def test_a_negative_seed_is_a_config_error_naming_the_key(tmp_path):
    """numpy takes no negative seed: it once failed after the database was created, naming nothing."""
    with pytest.raises(ConfigError, match="key 'seed'.*greater than or equal to 0"):
        load_config(None, {"seed": -1})
