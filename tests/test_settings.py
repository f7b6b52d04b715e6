"""The settings tree: YAML + environment overrides, clear errors naming the key and range."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tasks.settings import AppSettings, ConfigError, load_settings, unknown_env


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_project_config_loads_and_matches_seed_defaults():
    s = load_settings()
    assert s.labels.take_profit_atr == 2.5
    assert s.labels.stop_atr == 1.8
    assert s.labels.horizons == {"short": 5, "mid": 20}
    assert s.data.calendar == "XNYS"


def test_every_field_is_described():
    def walk(model) -> list[str]:
        missing = []
        for name, info in model.model_fields.items():
            if not info.description:
                missing.append(name)
            ann = info.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                missing += [f"{name}.{m}" for m in walk(ann)]
        return missing

    assert walk(AppSettings) == []


def test_env_override_beats_yaml(monkeypatch, tmp_path):
    path = _write(tmp_path, {"labels": {"take_profit_atr": 3.0}})
    assert load_settings(path).labels.take_profit_atr == 3.0
    monkeypatch.setenv("HCP_LABELS__TAKE_PROFIT_ATR", "4.5")
    assert load_settings(path).labels.take_profit_atr == 4.5


def test_out_of_range_value_names_key_and_range(tmp_path):
    path = _write(tmp_path, {"labels": {"take_profit_atr": -1}})
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    msg = str(err.value)
    assert "labels.take_profit_atr" in msg
    assert "-1" in msg
    assert "> 0" in msg and "<= 20" in msg


def test_bad_env_value_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("HCP_FEATURES__VOL_WINDOW", "1")
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, {}))
    assert "features.vol_window" in str(err.value)
    assert ">= 5" in str(err.value)


def test_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, {"labels": {"take_profit": 2.0}}))
    assert "labels.take_profit" in str(err.value)


def test_cross_field_rule(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, {"features": {"macd_fast": 30, "macd_slow": 26}}))
    assert "macd_fast" in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("labels: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_hcp_config_env_selects_file(monkeypatch, tmp_path):
    from tasks.settings import DEFAULT_CONFIG

    whole = yaml.safe_load(DEFAULT_CONFIG.read_text())
    path = _write(tmp_path, {**whole, "runtime": {"n_threads": 1}})
    monkeypatch.setenv("HCP_CONFIG", str(path))
    assert load_settings().runtime.n_threads == 1
    # the file in force must be whole: a partial one would run the rest on code defaults
    _write(tmp_path, {"runtime": {"n_threads": 1}})
    with pytest.raises(ConfigError, match="lacks the sections data, features"):
        load_settings()


def test_misspelt_variable_is_refused_naming_the_closest_valid_one(monkeypatch):
    monkeypatch.setenv("HCP_LABLES__TAKE_PROFIT_ATR", "3")
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("unknown environment variable HCP_LABLES__TAKE_PROFIT_ATR (did you "
                          "mean HCP_LABELS__TAKE_PROFIT_ATR?)")


@pytest.mark.parametrize("name, closest", [
    ("HCP_LABELS_TAKE_PROFIT_ATR", "HCP_LABELS__TAKE_PROFIT_ATR"),    # one underscore
    ("HCP_MODELS__XGB__N_ESTIMATOR", "HCP_MODELS__XGB__N_ESTIMATORS"),  # nested field
    ("HCP_HOMEE", "HCP_HOME"),                                         # a named variable
    ("HCP_REMOTE_BASEURL", "HCP_REMOTE_BASE_URL"),
])
def test_suggestions(monkeypatch, name, closest):
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=f"{name} \\(did you mean {closest}\\?\\)"):
        load_settings()


@pytest.mark.parametrize("name", [
    "HCP_HOME", "HCP_CONFIG", "HCP_FAULT_INJECT", "HCP_PROJECT_DIR", "HCP_OPERATOR_TOKEN",
    "HCP_NOTIFY_WEBHOOK_URL", "HCP_LOCAL_GGUF",
    "HCP_MODELS__RF__N_ESTIMATORS",           # a field of a nested model
    "HCP_LABELS__HORIZONS__LONG",             # a key of a dict[str, int] field
    "HCP_RISK__BUCKET_CAPS__CORE",            # a key of a dict with literal keys
    "HCP_MODELS__RF",                         # a whole section as JSON
    "HCP_labels__stop_atr",                   # the settings are case-insensitive
])
def test_valid_names_are_accepted(name):
    assert unknown_env({name: "1"}) == []


@pytest.mark.parametrize("name", [
    "HCP_RISK__BUCKET_CAPS__SMALL",           # not one of the literal keys
    "HCP_LABELS__STOP_ATR__X",                # nothing below a number
    "HCP_",
])
def test_paths_that_name_no_setting(name):
    assert unknown_env({name: "1"}) == [name]


def test_variables_named_by_env_fields_are_accepted(monkeypatch, tmp_path):
    path = _write(tmp_path, {"operator": {"serve": {"token_env": "HCP_DESK_TOKEN"}}})
    monkeypatch.setenv("HCP_DESK_TOKEN", "secret")
    assert load_settings(path).operator.serve.token_env == "HCP_DESK_TOKEN"
    with pytest.raises(ConfigError, match="HCP_DESK_TOKEN"):
        load_settings()                       # the project's file names another variable
    monkeypatch.setenv("HCP_OPERATOR__NOTIFY__WEBHOOK_URL_ENV", "HCP_DESK_TOKEN")
    assert load_settings().operator.notify.webhook_url_env == "HCP_DESK_TOKEN"


def test_every_variable_the_project_mentions_is_valid():
    """Every HCP_ name in the code, tests, benchmarks, docs and deployment files resolves."""
    root = Path(__file__).resolve().parents[1]
    files = [p for folder in ("flows", "tasks", "tests", "bench", "docs") for p in
             (root / folder).rglob("*") if p.suffix in (".py", ".md", ".yaml")]
    files += [root / "prefect.yaml", root / "Makefile", root / "README.md"]
    names = set()
    for path in files:
        if path.is_file():
            names |= set(re.findall(r"\bHCP_[A-Za-z0-9_]*[A-Za-z0-9]\b", path.read_text()))
    names -= {"HCP_DESK_TOKEN", "HCP_LABLES__TAKE_PROFIT_ATR", "HCP_LABELS_TAKE_PROFIT_ATR",
              "HCP_MODELS__XGB__N_ESTIMATOR", "HCP_HOMEE", "HCP_REMOTE_BASEURL",
              "HCP_RISK__BUCKET_CAPS__SMALL", "HCP_LABELS__STOP_ATR__X"}  # this file's examples
    assert len(names) > 20
    assert unknown_env(dict.fromkeys(names, "1")) == []


def test_ranker_rows_per_horizon_name_known_horizons_and_sane_caps(monkeypatch, tmp_path):
    settings = load_settings()
    assert settings.models.ranker.rows_for("mid") == 120_000
    assert settings.models.ranker.rows_for("short") == settings.models.ranker.max_train_rows
    for bad, words in (({"long": 90_000}, "not label horizons"), ({"mid": 10}, "1000..50000000")):
        path = _write(tmp_path, {"models": {"ranker": {"horizon_max_train_rows": bad}}})
        with pytest.raises(ConfigError, match=words):
            load_settings(path)
    monkeypatch.setenv("HCP_MODELS__RANKER__HORIZON_MAX_TRAIN_ROWS__MID", "30000")
    assert load_settings().models.ranker.rows_for("mid") == 30_000
