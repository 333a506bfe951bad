"""The command line, driven in-process through ``bench.cli.main``."""

import re

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.cli import main


def test_methods_lists_builtins_with_hyperparameters(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^fedavg\s+\[base\]", out, re.M)
    assert "finetune_epochs = 0" in out and "mu = 0.01  tune: {'low': 0.001, 'high': 1.0, 'log': True}" in out


def test_partition_prints_histogram_and_writes_heatmap(tmp_path, capsys):
    out_png = tmp_path / "heat.png"
    code = main(["partition", "demo", "data.dataset=digits", "data.clients=5", "data.alpha=0.1",
                 f"run.cache_dir={tmp_path}", "--out", str(out_png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "digits: 1797 samples, 5 clients, alpha=0.1" in out
    assert re.search(r"^mean per-client label entropy: \d\.\d{3} nats \(natural log; 0 = one class per client, "
                     r"ln 10 = 2\.303 = every class equally often\)$", out, re.M)
    assert out_png.stat().st_size > 1000


def test_flops_prints_the_per_exit_table(capsys):
    assert main(["flops", "conv3", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "static model (backbone + last head)" in out and "100.0%" in out


def test_flops_says_which_width_it_counts_and_what_params_counts(capsys):
    assert main(["flops", "conv3", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("conv3 at width 1 (model.width's default, --width W for another; the demo preset runs "
                             "conv3 at width 0.5: --width 0.5) on digits input (1, 8, 8), 10 classes")
    assert ("params: the parameters an inference that stops at exit k uses: stages 1..k, exit heads 1..k and "
            "anything outside the stages (the last row is the whole network)") in out
    full_width_params = [int(row.split("|")[3].replace(",", "")) for row in out if row.startswith("|      ")]
    assert main(["flops", "conv3", "--dataset", "digits", "--width", "0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("conv3 at width 0.5 (given with --width) on digits")
    half_width_params = [int(row.split("|")[3].replace(",", "")) for row in out if row.startswith("|      ")]
    assert half_width_params[-1] == 24_558 and full_width_params[-1] > 3 * half_width_params[-1]
    assert main(["flops", "resnet8", "--dataset", "digits"]) == 0  # not the demo's model: no demo width to name
    assert capsys.readouterr().out.startswith("resnet8 at width 1 (model.width's default, --width W for another) on")


def test_a_misspelt_sweep_preset_names_the_closest_one(capsys):
    assert main(["sweep", "smok", "--dry-run"]) == 2
    assert capsys.readouterr().err == ("cafebench sweep: error: 'smok' is neither a sweep file nor a sweep preset; "
                                       "did you mean smoke? (sweep presets: cpu-rounds, cpu/tables, paper/tables, "
                                       "quick/tables, reference/tables, review-gaps, smoke)\n")
    assert main(["sweep", "quick/table", "--dry-run"]) == 2
    assert "did you mean quick/tables?" in capsys.readouterr().err


def test_a_config_with_a_yaml_syntax_error_is_refused_in_one_line_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  rounds: 2\n  lr: [0.1\n")
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == (f"cafebench run: error: {path}, line 4, column 1: not valid YAML: expected ',' "
                                       "or ']', but got '<stream end>' (while parsing a flow sequence that starts "
                                       "at line 3)\n")


def test_run_a_config_file_and_report_per_exit_accuracy(tracking_uri, tiny_config_data, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_config_data))
    assert main(["run", str(path), "--tracking-uri", tracking_uri, "train.rounds=1", "--ui-port", "5123"]) == 0
    out = capsys.readouterr().out
    run_id = re.search(r"run (\w+) finished", out).group(1)
    assert re.search(r"exit_1=0\.\d{4}\s+exit_2=0\.\d{4}\s+exit_3=0\.\d{4}\s+mean=0\.\d{4}", out)
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.data.params["train.rounds"] == "1"
    assert (f"run {run_id} finished: http://127.0.0.1:5123/#/experiments/{run.info.experiment_id}/runs/{run_id} "
            "(to open it, start the UI: cafebench ui --port 5123)\n") in out  # overrides anywhere, the chosen port


def test_user_errors_give_exit_status_2_and_a_message(tracking_uri, tiny_config_data, tmp_path, capsys):
    assert main(["run", "demo", "train.lrr=0.1"]) == 2
    assert "train.lrr: unknown key" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "give a config file or preset name" in capsys.readouterr().err
    assert main(["run", "demo", "--resume", "abc"]) == 2
    assert "do not pass a config or overrides as well" in capsys.readouterr().err
    assert main(["flops", "nonet"]) == 2
    assert "unknown model" in capsys.readouterr().err.lower()


def test_errors_found_without_training_create_no_run(tracking_uri, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAFEBENCH_NO_DOWNLOAD", "1")
    monkeypatch.setenv("CAFEBENCH_DATA", str(tmp_path / "no-data"))
    digits = ["run", "demo", "data.dataset=digits", "data.clients=3", "train.rounds=1",
              f"run.cache_dir={tmp_path / 'cache'}", f"run.checkpoint_dir={tmp_path / 'ckpt'}"]
    for extra, message in [
        (["data.dataset=nosuch"], "unknown dataset 'nosuch'"),
        (["model.name=transformer4"], "model 'transformer4' takes token ids of shape (L,), but input_shape is (1, 8"),
        (["data.clients=500"], "500 clients × min_samples=10 need 5000 samples but dataset 'digits' has 1797"),
        (["data.alpha=.inf"], "alpha must be a finite number > 0, got inf"),
        (["data.dataset=cifar10"], "dataset 'cifar10' not found"),
        ([f"data.root={tmp_path / 'no-such-root'}"],  # was skipped: the run trained on another dataset
         f"error: data root '{tmp_path / 'no-such-root'}' (data.root) does not exist; give the folder"),
    ]:
        assert main([*digits, *extra]) == 2
        assert message in capsys.readouterr().err
    client = MlflowClient(tracking_uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert not (tmp_path / "ckpt").exists()


def test_overrides_after_options_and_a_dry_run_prints_once(capsys):
    assert main(["sweep", "smoke", "--workers", "2", "--dry-run", "run.checkpoint_every=1", "seed=[7]"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("sweep smoke: 2 runs into MLflow experiment 'smoke'\n")
    assert captured.out.count(" seed=7\n") == 2 and captured.err == ""
    for argv, stray in [(["sweep", "smoke", "--dry-run", "--no-such-option"], "--no-such-option"),
                        (["methods", "seed=1"], "seed=1")]:  # a command without overrides takes none
        with pytest.raises(SystemExit) as exit_status:
            main(argv)
        assert exit_status.value.code == 2
        assert f"unrecognized arguments: {stray}" in capsys.readouterr().err


def test_ui_binds_to_loopback_on_the_tracking_store():
    from bench.cli.ui import ui_command

    cmd = ui_command("sqlite:///x.db", 5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:///x.db"
    assert cmd[cmd.index("--port") + 1] == "5123"


@pytest.mark.parametrize("argv, line", [
    (["run", "data.clients=5", "demo"], "cafebench run: error: 'data.clients=5' is an override, not a config: "
     "key=value overrides go after the config name, as in: cafebench run demo data.clients=5"),
    (["run", "train.rounds=1", "--tracking-uri", "sqlite:///x.db", "demo", "seed=2"], "cafebench run: error: "
     "'train.rounds=1' is an override, not a config: key=value overrides go after the config name, as in: "
     "cafebench run demo train.rounds=1 seed=2"),
    (["sweep", "seed=[1]", "smoke", "--dry-run"], "cafebench sweep: error: 'seed=[1]' is an override, not a preset: "
     "key=value overrides go after the preset name, as in: cafebench sweep smoke seed=[1]"),
    (["partition", "data.alpha=0.1"], "cafebench partition: error: 'data.alpha=0.1' is an override, not a config: "
     "key=value overrides go after the config name, as in: cafebench partition CONFIG data.alpha=0.1"),
])
def test_an_override_before_the_config_name_says_where_overrides_go(capsys, argv, line):
    with pytest.raises(SystemExit) as exit_status:
        main(argv)
    assert exit_status.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_a_plugin_that_raises_on_import_is_named_with_the_exception_type(tmp_path, capsys):
    plugin = tmp_path / "boom_plugin.py"
    plugin.write_text("import math\n\nraise RuntimeError('boom on import')\n")
    assert main(["datasets", "--plugin", str(plugin)]) == 2
    assert capsys.readouterr().err == (f"cafebench datasets: error: plugins: plugin file '{plugin}' raised "
                                       "RuntimeError on import (line 3): boom on import\n")
    plugin.write_text("def broken(:\n")
    assert main(["methods", "--plugin", str(plugin)]) == 2  # imported again, not taken as loaded the first time
    err = capsys.readouterr().err
    assert err.startswith(f"cafebench methods: error: plugins: plugin file '{plugin}' raised SyntaxError on import")
    assert err.count("\n") == 1 and "line 1" in err


STORE_COMMANDS = ("run", "demo", "sweep", "tune", "reproduce", "report", "ui")  # the commands that use the store


def test_every_command_that_uses_the_store_takes_the_same_tracking_uri_option():
    from bench.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        options = {o: a for a in parser._actions for o in a.option_strings}
        assert ("--tracking-uri" in options) == (name in STORE_COMMANDS), name
        if name in STORE_COMMANDS:
            assert options["--tracking-uri"].help == ("MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
                                                      "sqlite:///mlflow.db)")


def test_the_store_is_the_option_else_the_environment_else_the_default(tmp_path, monkeypatch):
    from bench.cli import build_parser
    from bench.cli.tracking import checked_store, store_uri, tracking_uri_override
    from bench.track.store import StoreError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_uri(None) == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert store_uri(None) == f"sqlite:///{tmp_path}/env.db"
    assert checked_store(f"sqlite:///{tmp_path}/given.db") == f"sqlite:///{tmp_path}/given.db"
    with pytest.raises(StoreError, match=f"tracking store sqlite:///{tmp_path}/missing/x.db: folder .* does not exist"):
        checked_store(f"sqlite:///{tmp_path}/missing/x.db")
    given = build_parser().parse_args(["run", "demo", "--tracking-uri", "sqlite:///x.db"])
    assert tracking_uri_override(given) == ["run.tracking_uri=sqlite:///x.db"]
    assert tracking_uri_override(build_parser().parse_args(["run", "demo"])) == []
