"""The settings tree: YAML + environment overrides, clear errors naming the key and range."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.settings import AppSettings, ConfigError, load_settings


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
    path = _write(tmp_path, {"runtime": {"n_threads": 1}})
    monkeypatch.setenv("HCP_CONFIG", str(path))
    assert load_settings().runtime.n_threads == 1
