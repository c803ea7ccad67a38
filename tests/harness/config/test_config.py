"""Config parsing and validation."""
from __future__ import annotations

import pytest

from quantbench.harness.config import ConfigError, dump_toml, load_config, parse_config

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


def test_embedded_default_is_the_fashion_cnn_sweep():
    cfg = load_config(None)
    assert [m.name for m in cfg.models] == ["fashion_cnn"]
    assert [v.name for v in cfg.variants] == ["fp32", "fp16", "int8-minmax", "int8-entropy", "int8-percentile"]
    methods = [v.quant.get("calibration") for v in cfg.variants if v.precision == "int8"]
    assert methods == ["minmax", "entropy", "percentile"]


def test_dump_config_round_trips():
    cfg = load_config(None)
    again = parse_config(tomllib.loads(dump_toml(cfg)))
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("doc, expected", [
    ({"run": {"batch_size": [1]}, "models": ["m"], "variants": [{"name": "fp32"}]}, "did you mean 'batch_sizes'"),
    ({"runn": {}}, "did you mean 'run'"),
    ({"models": ["m"], "variants": [{"name": "a", "calibraton": "minmax"}]}, "did you mean 'calibration'"),
    ({"models": ["m"], "variants": [{"name": "a", "precision": "int4"}]}, "precision must be fp32, fp16 or int8"),
    ({"models": ["m"], "variants": [{"name": "a"}, {"name": "a"}]}, "duplicate variant"),
    ({"models": [], "variants": [{"name": "a"}]}, "no [[models]]"),
    ({"run": {"min_iters": "ten"}, "models": ["m"], "variants": [{"name": "a"}]}, "run.min_iters must be"),
    ({"run": {"batch_sizes": [0]}, "models": ["m"], "variants": [{"name": "a"}]},
     "run.batch_sizes must be a list of integers >= 1"),
    ({"models": ["m"], "variants": [{"name": "a", "builder": "trt-calibrate"}]}, "needs calibrator"),
])
def test_bad_configs_name_the_problem(doc, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\nx=1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_int8_precision_inferred_from_quant_keys():
    cfg = parse_config({"models": ["m"], "variants": [{"name": "q", "calibration": "entropy", "num_bins": 512}]})
    assert cfg.variants[0].precision == "int8"
    assert cfg.variants[0].quant == {"calibration": "entropy", "num_bins": 512}


def _doc(run=None, model=None, variant=None, options=None):
    doc = {"run": run or {}, "models": [{"name": "fashion_cnn", **(model or {})}],
           "variants": [variant or {"name": "fp32"}]}
    if options is not None:
        doc["runtime_options"] = options
    return doc


@pytest.mark.parametrize("doc, expected", [
    (_doc(variant={"name": "q", "per_channel": "false"}),
     "variant 'q': per_channel must be true or false, not \"false\""),
    (_doc(variant={"name": "q", "op_types": "Conv"}), "variant 'q': op_types must be a list of strings, not \"Conv\""),
    (_doc(variant={"name": "q", "calib_classes": [0.5]}), "variant 'q': calib_classes must be a list of integers"),
    (_doc(variant={"name": "q", "calib_samples": 0}), "variant 'q': calib_samples"),
    (_doc(variant={"name": "q", "calibration": "percentile", "percentile": 20.0}), "variant 'q': percentile"),
    (_doc(variant={"name": "f", "precision": "fp16", "calibrator": "entropy"}), "calibrator applies only to"),
    (_doc(variant={"name": 3}), "variant name must be a non-empty one-line string, not 3"),
    (_doc(model={"eval_samples": -10}), "model 'fashion_cnn': eval_samples must be an integer >= 1, not -10"),
    (_doc(model={"eval_samples": 200.5}), "model 'fashion_cnn': eval_samples must be an integer, not 200.5"),
    (_doc(model={"input_shape": "1,28,28"}), "input_shape must be a list of integers, not \"1,28,28\""),
    (_doc(model={"input_shape": [1, 0, 28]}), "input_shape must be [channels, height, width]"),
    (_doc(model={"num_classes": 0}), "num_classes must be an integer >= 1"),
    (_doc(model={"weights": "/nonexistent/w.pt"}), "weights file not found: /nonexistent/w.pt"),
    (_doc(model={"labels": "/nonexistent/labels.txt"}), "labels file not found"),
    (_doc(model={"dataset": ""}), "dataset is empty"),
    (_doc(model={"dataset": {"classes": ["a"]}}), "dataset needs 'spec'"),
    (_doc(model={"preprocess": {"chanels": 1}}),
     "unknown key 'chanels' in the preprocess table of model 'fashion_cnn'"),
    (_doc(model={"preprocess": {"resize": 224}}), "preprocess.resize must be [height, width] (integers >= 1), not 224"),
    (_doc(model={"preprocess": {"std": [0.0]}}), "preprocess.std must be finite numbers > 0"),
    (_doc(model={"preprocess": {"layout": "CHW"}}), "preprocess.layout must be one of NCHW, NHWC"),
    (_doc(run={"threads": -3}), "run.threads must be an integer >= 0, not -3"),
    (_doc(run={"threads": 2.0}), "run.threads must be an integer, not 2.0"),
    (_doc(run={"interleave_rounds": -2}), "run.interleave_rounds must be an integer >= 0, not -2"),
    (_doc(run={"min_time_s": float("nan")}), "run.min_time_s must be a finite number, not nan"),
    (_doc(run={"min_time_s": float("inf")}), "run.min_time_s must be a finite number, not inf"),
    (_doc(run={"min_time_s": -0.5}), "run.min_time_s must be a number >= 0, not -0.5"),
    (_doc(run={"timeout_s": 0}), "run.timeout_s must be a number > 0, not 0"),
    (_doc(run={"min_iters": 100, "max_iters": 10}), "run.max_iters (10) is below run.min_iters (100)"),
    (_doc(run={"devices": []}), "run.devices is empty"),
    (_doc(run={"devices": ["auto", "cpu"]}), "'auto' cannot be combined"),
    (_doc(run={"runtimes": ["ort-cpu", "ort-cpu"]}), "run.runtimes lists \"ort-cpu\" twice"),
    (_doc(run={"runtimes": ["ort-cpo"]}), "did you mean 'ort-cpu'"),
    (_doc(run={"batch_sizes": [8, 8]}), "run.batch_sizes lists 8 twice"),
    (_doc(run={"batch_sizes": [True]}), "run.batch_sizes must be a list of integers, not [true]"),
    (_doc(run={"batch_sizes": [1_000_000]}), "run.batch_sizes must be a list of integers from 1 to 65536"),
    (_doc(run={"output": ""}), "run.output is empty"),
    (_doc(run={"report": "yes"}), "run.report must be true or false, not \"yes\""),
    (_doc(options={"ort-cpux": {}}), "[runtime_options.ort-cpux]: unknown runtime; did you mean 'ort-cpu'?"),
    (_doc(options={"ort-cpu": {"thread": 1}}), "unknown option 'thread' in [runtime_options.ort-cpu]"),
    (_doc(options={"ort-cpu": {"threads": -1}}), "[runtime_options.ort-cpu] threads must be an integer >= 0"),
    (_doc(options={"ort-cpu": {"threads": [1, 1]}}), "[runtime_options.ort-cpu] threads lists 1 twice"),
    (_doc(options={"openvino": {"precision": []}}), "[runtime_options.openvino] precision is an empty list"),
    (_doc(options={"openvino": {"hint": {"a": 1}}}), "[runtime_options.openvino] hint must be a string, number"),
    (_doc(options={"openvino": {"streams": float("nan")}}), "[runtime_options.openvino] streams must be a finite"),
    ({"models": [{"name": "fashion_cnn"}, {"name": "fashion_cnn", "weights": "random"}], "variants": [{"name": "a"}]},
     "models[0] and models[1] are both shown as 'fashion_cnn'"),
])
def test_values_are_type_and_range_checked_with_the_key_named(doc, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_good_values_pass_unchanged(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    cfg = parse_config({
        "run": {"batch_sizes": 8, "runtimes": "ort-cpu", "min_time_s": 0, "interleave_rounds": 0},
        "models": [{"name": "fashion_cnn", "weights": str(weights), "input_shape": [1, 28, 28],
                    "preprocess": {"mean": 0.5, "std": [0.25]}, "dataset": {"spec": "fashion-mnist"}},
                   {"name": "fashion_cnn", "weights": "random", "label": "random"},
                   {"name": "mnist_cnn", "weights": "builtin"}],
        "variants": [{"name": "q", "op_types": ["Conv"], "per_channel": False, "percentile": 99.9,
                      "calibration": "percentile"}],
        "runtime_options": {"openvino": {"precision": ["default", "f32"], "streams": 1}}})
    assert cfg.run.batch_sizes == [8] and cfg.run.runtimes == ["ort-cpu"]
    assert cfg.variants[0].quant["per_channel"] is False and cfg.variants[0].quant["op_types"] == ["Conv"]
    assert cfg.variants[0].quant_settings().op_types == ("Conv",)
    assert parse_config(tomllib.loads(dump_toml(cfg))).to_dict() == cfg.to_dict()


def test_overrides_are_checked_again():
    cfg = load_config(None)
    cfg.run.threads = -1
    with pytest.raises(ConfigError, match="run.threads must be an integer >= 0"):
        cfg.validate()


def test_declared_option_types_are_enforced(monkeypatch):
    """A runtime that declares ``option_types()`` gets its option values checked by type."""
    from quantbench.runtimes import get_runtime_class

    cls = get_runtime_class("ort-cpu")
    monkeypatch.setattr(cls, "option_types", classmethod(lambda c: {"graph_optimization": str}), raising=False)
    with pytest.raises(ConfigError, match="graph_optimization must be a string, not 1"):
        parse_config(_doc(options={"ort-cpu": {"graph_optimization": [1]}}))
    cfg = parse_config(_doc(options={"ort-cpu": {"graph_optimization": ["all", "basic"]}}))
    assert cfg.runtime_options == {"ort-cpu": {"graph_optimization": ["all", "basic"]}}
    with pytest.raises(ConfigError, match="graph_optimization must be a string, not 2"):
        parse_config(_doc(options={"ort-cpu": {"graph_optimization": ["all", 2]}}))  # one bad value in a sweep


@pytest.mark.parametrize("table", [
    {"crop": 224}, {"crop": [224, 200]}, {"crop": [0, 4]}, {"crop": 0}, {"resize": 224}, {"resize": [28, 28]},
    {"mean": 0.5}, {"mean": []}, {"std": -1.0}, {"std": [0.2, 0.3, 0.4]}, {"scale": 0}, {"channels": 3},
    {"channels": True}, {"resize_shorter": 256, "crop": 224}, {"resize_shorter": 8, "resize": [8, 8]},
    {"layout": "NHWC"}, {"interpolation": "nearest"}, {"channels": 1, "mean": [0.1, 0.2, 0.3]},
])
def test_the_config_checker_and_preprocess_agree_on_every_table(table):
    """One validator: a preprocess table the config accepts is one Preprocess accepts, and the other way round
    (crop = 224 was refused by the config and accepted by Preprocess)."""
    from quantbench.calibration_data import DataError, Preprocess

    try:
        Preprocess.check_table(table)
        data_ok = True
    except DataError:
        data_ok = False
    try:
        parse_config(_doc(model={"preprocess": table}))
        config_ok = True
    except ConfigError:
        config_ok = False
    assert config_ok == data_ok
    if table == {"crop": 224}:
        assert config_ok and Preprocess.from_dict(table).crop == (224, 224)


def test_model_level_classes_join_a_dataset_table_and_a_missing_table_labels_file_is_a_config_error(tmp_path):
    """Model-level `classes` with a dataset table reached the data layer as a table inside a table ("a data
    source table needs 'spec'"); a dataset table's missing labels file was found only when the model was
    prepared."""
    from quantbench.calibration_data import open_source
    from quantbench.harness.sweep.prepare import resolve_models

    for name in ("cat", "dog"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        pytest.importorskip("PIL.Image").new("L", (4, 4)).save(tmp_path / "imgs" / name / "0.png")
    table = {"spec": f"folder:{tmp_path / 'imgs'}"}
    cfg = parse_config(_doc(model={"dataset": table, "classes": ["dog", "cat"]}))
    pm = resolve_models(cfg)[0]
    assert pm.dataset == {**table, "classes": ["dog", "cat"]}
    assert open_source(pm.dataset).class_map == {"cat": 1, "dog": 0}

    with pytest.raises(ConfigError) as err:
        parse_config(_doc(model={"dataset": {**table, "classes": ["cat", "dog"]}, "classes": ["dog", "cat"]}))
    assert "classes given in [[models]] and classes in its data table" in str(err.value)
    missing = tmp_path / "no-such-labels.txt"
    for model in ({"dataset": {**table, "labels": str(missing)}},
                  {"calib_dataset": {**table, "labels": "no-such-labels.txt"}}):
        with pytest.raises(ConfigError) as err:
            parse_config(_doc(model=model), base=tmp_path)
        assert f"labels file not found: {missing}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="model 'fashion_cnn': dataset: unknown data source 'foldr:x'; did you mean"):
        parse_config(_doc(model={"dataset": "foldr:x"}))


def test_paths_resolve_against_the_toml_folder_and_flags_against_the_working_directory(tmp_path, monkeypatch,
                                                                                       capsys):
    """A sweep file's relative paths point from its own folder, whatever the working directory; paths given
    as flags point from the working directory. --dump-config shows them resolved."""
    from quantbench.harness.cli import main

    sweep_dir, cwd = tmp_path / "sweeps", tmp_path / "elsewhere"
    for folder in (sweep_dir, cwd):
        folder.mkdir()
        (folder / "w.pt").write_bytes(b"x")
    (sweep_dir / "sweep.toml").write_text('[[models]]\nname = "fashion_cnn"\nweights = "w.pt"\n'
                                          'dataset = "npz:data/x.npz"\n[[variants]]\nname = "fp32"\n')
    monkeypatch.chdir(cwd)
    assert main(["run", str(sweep_dir / "sweep.toml"), "--dump-config"]) == 0
    dumped = tomllib.loads(capsys.readouterr().out)["models"][0]
    assert dumped["weights"] == str(sweep_dir / "w.pt") and dumped["dataset"] == f"npz:{sweep_dir / 'data/x.npz'}"
    assert main(["run", str(sweep_dir / "sweep.toml"), "--weights", "w.pt", "--dump-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["models"][0]["weights"] == str(cwd / "w.pt")
    assert main(["run", str(sweep_dir / "sweep.toml"), "--models", "net.onnx", "--dump-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["models"][0]["name"] == str(cwd / "net.onnx")
