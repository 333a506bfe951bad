"""Plugins: the in-repo decorator, a module from a temporary file, and clear errors."""

import textwrap

import pytest

from bench.config import ConfigError, apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.methods.api import Method
from bench.methods.registry import available_methods, get_method, register

PLUGIN = textwrap.dedent('''
    """FedAvg with a tenth of the learning rate: a plugin written outside the repository."""
    from pydantic import Field

    from baselines.fedavg import FedAvg, FedAvgHparams
    from bench.methods.registry import register


    class SlowHparams(FedAvgHparams):
        lr_scale: float = Field(0.1, gt=0, le=1)


    @register
    class SlowFedAvg(FedAvg):
        """FedAvg whose clients take smaller steps."""
        name = "slow_fedavg"
        family = "pfl"
        Hparams = SlowHparams

        def local_update(self, model, round, payload, state, data, gen):
            from dataclasses import replace
            original = self.ctx.train
            self.ctx.train = replace(original, lr=original.lr * self.hp.lr_scale)
            try:
                return super().local_update(model, round, payload, state, data, gen)
            finally:
                self.ctx.train = original
''')


def test_builtin_methods_are_registered():
    methods = available_methods()
    assert {"fedavg", "local"} <= set(methods)
    assert get_method("fedavg").family == "base"


def test_plugin_from_a_temporary_module_registers_and_runs(tmp_path, tiny_config_data):
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN)
    data = apply_overrides(tiny_config_data, ["method.name=slow_fedavg", "train.rounds=1",
                                              "method.hparams.lr_scale=0.5"])
    data["plugins"] = [str(path)]
    config = validate_config(data)
    assert config.method.hparams == {"finetune_epochs": 0, "lr_scale": 0.5}
    assert "slow_fedavg" in available_methods()
    sim = Simulation(config)
    sim.run()
    assert 0.0 <= sim.last_eval.metrics["test/acc/mean"] <= 1.0


def test_plugin_hparams_are_validated(tmp_path, tiny_config_data):
    path = tmp_path / "my_plugin2.py"
    path.write_text(PLUGIN.replace("slow_fedavg", "slow_fedavg2"))
    data = apply_overrides(tiny_config_data, ["method.name=slow_fedavg2", "method.hparams.lr_scale=5"])
    data["plugins"] = [str(path)]
    with pytest.raises(ConfigError, match=r"method\.hparams\.lr_scale: Input should be less than or equal to 1"):
        validate_config(data)


def test_missing_plugin_file_and_module_are_reported(tiny_config_data):
    for spec, match in [("nowhere.py", "does not exist"), ("no_such_module_xyz", "cannot import")]:
        data = dict(tiny_config_data, plugins=[spec])
        with pytest.raises(ConfigError, match=match):
            validate_config(data)


def test_register_rejects_bad_names_and_families():
    class NoName(Method):
        name = "Bad Name"

    class BadFamily(Method):
        name = "ok_name"
        family = "other"

    with pytest.raises(ValueError, match="lower-case identifier"):
        register(NoName)
    with pytest.raises(ValueError, match="family must be one of"):
        register(BadFamily)
    with pytest.raises(TypeError, match="subclasses of"):
        register(int)


def test_an_unknown_method_names_the_closest_one_and_how_a_plugin_is_loaded(tiny_config_data):
    with pytest.raises(ValueError) as caught:
        get_method("fedprx")
    message = str(caught.value)
    assert message.startswith("unknown method 'fedprx' (did you mean fedprox?); available: cafedistill, depthfl, ")
    assert message.endswith("(a plugin's method needs its file imported: plugins='[FILE.py]', or --plugin FILE.py "
                            "for cafebench methods; or a 'cafebench.methods' entry point)")
    with pytest.raises(ValueError, match=r"^unknown method 'zzz'; available: "):  # nothing close: no guess
        get_method("zzz")
    data = apply_overrides(tiny_config_data, ["method.name=cafedistil"])
    with pytest.raises(ConfigError, match=r"\n  method\.name: unknown method 'cafedistil' \(did you mean "
                                          r"cafedistill\?\); available: "):
        validate_config(data)
