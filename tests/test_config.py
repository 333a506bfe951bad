import pytest

from bench.config import ConfigError, apply_overrides, load_config, preset_names, validate_config


def test_demo_preset_loads_and_overrides_apply():
    config = load_config("demo", ["train.rounds=7", "data.alpha=0.1", "method.hparams.finetune_epochs=1"])
    assert config.train.rounds == 7
    assert config.data.alpha == 0.1
    assert config.method.hparams == {"finetune_epochs": 1}
    assert "demo" in preset_names()


def test_unknown_key_is_rejected_with_its_path(tiny_config_data):
    tiny_config_data["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        validate_config(tiny_config_data)


def test_bad_value_is_rejected_with_its_path(tiny_config_data):
    tiny_config_data["data"]["alpha"] = -1
    with pytest.raises(ConfigError, match=r"data\.alpha: Input should be greater than 0"):
        validate_config(tiny_config_data)


def test_bad_split_is_rejected(tiny_config_data):
    tiny_config_data["data"]["split"] = [0.5, 0.1, 0.1]
    with pytest.raises(ConfigError, match=r"data\.split"):
        validate_config(tiny_config_data)


def test_method_hparams_are_validated_against_the_method(tiny_config_data):
    tiny_config_data["method"]["hparams"] = {"finetune_epochs": -2}
    with pytest.raises(ConfigError, match=r"method\.hparams\.finetune_epochs"):
        validate_config(tiny_config_data)
    tiny_config_data["method"]["hparams"] = {"bogus": 1}
    with pytest.raises(ConfigError, match=r"method\.hparams\.bogus: unknown key"):
        validate_config(tiny_config_data)


def test_unknown_method_lists_the_available_ones(tiny_config_data):
    tiny_config_data["method"]["name"] = "nope"
    with pytest.raises(ConfigError, match=r"method\.name: unknown method 'nope'; available: .*fedavg"):
        validate_config(tiny_config_data)


def test_content_hash_ignores_execution_settings_but_not_results_settings(tiny_config_data):
    base = validate_config(tiny_config_data).content_hash()
    moved = apply_overrides(tiny_config_data, ["run.executor=process", "run.experiment=other"])
    assert validate_config(moved).content_hash() == base
    changed = apply_overrides(tiny_config_data, ["train.lr=0.1"])
    assert validate_config(changed).content_hash() != base


def test_bad_override_and_missing_source():
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config("demo", ["train.rounds"])
    with pytest.raises(ConfigError, match=r"neither a config file nor a preset \(presets: .*demo"):
        load_config("no-such-preset")
    with pytest.raises(ConfigError, match="not found"):
        load_config("missing.yaml")


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_a_plugin_module_that_raises_on_import_names_its_file_and_the_exception(tmp_path, monkeypatch,
                                                                                tiny_config_data):
    (tmp_path / "zero_division_plugin.py").write_text("ratio = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^plugins: plugin module 'zero_division_plugin' \(.*/zero_division_plugin"
                                          r"\.py\) raised ZeroDivisionError on import \(line 1\): division by zero$"):
        validate_config(dict(tiny_config_data, plugins=["zero_division_plugin"]))
    (tmp_path / "needs_a_package_plugin.py").write_text("import no_such_package_xyz\n")
    with pytest.raises(ConfigError, match=r"^plugins: plugin module 'needs_a_package_plugin' .* raised "
                                          r"ModuleNotFoundError on import \(line 1\): No module named "
                                          r"'no_such_package_xyz'$"):
        validate_config(dict(tiny_config_data, plugins=["needs_a_package_plugin"]))


@pytest.mark.parametrize("override, line", [
    ("train.lrr=0.1", "  train.lrr: unknown key (not allowed here); did you mean train.lr?"),
    ("trian.rounds=3", "  trian: unknown key (not allowed here); did you mean train?"),
    ("seeds=3", "  seeds: unknown key (not allowed here); did you mean seed?"),
    ("data.optoins={}", "  data.optoins: unknown key (not allowed here); did you mean data.options?"),
    ("train.xyz=1", "  train.xyz: unknown key (not allowed here)"),  # nothing close: no guess
    ("method.hparams.muu=0.1", "  method.hparams.muu: unknown key (not allowed here); did you mean method.hparams.mu?"),
])
def test_an_unknown_key_names_the_closest_allowed_one(override, line):
    with pytest.raises(ConfigError) as caught:
        load_config("demo", ["method.name=cafedistill", override])
    assert str(caught.value).splitlines() == ["invalid config:", line]


def test_an_unknown_preset_names_the_closest_one_or_the_command_for_a_sweep_preset():
    for source, message in [
        ("dmeo", "'dmeo' is neither a config file nor a preset; did you mean demo? (presets: demo)"),
        ("smoke", "'smoke' is neither a config file nor a preset; smoke is a sweep preset: cafebench sweep smoke "
                  "(presets: demo)"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_config(source)
        assert str(caught.value) == message


def test_a_yaml_syntax_error_names_its_file_and_line_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  dataset: digits\n clients: 3\n")  # line 3 is indented by one space
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}, line 3, column 2: not valid YAML: expected <block end>, but found "
                                 "'<block mapping start>' (while parsing a block mapping that starts at line 1)")
    path.write_text("seed: 0\ntrain: {rounds: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}, line 3, column 1: not valid YAML: expected ',' or '}}', but got "
                                 "'<stream end>' (while parsing a flow mapping that starts at line 2)")
