"""One typed settings tree, loaded from ``config/app.yaml`` with environment overrides.

Precedence (highest first): explicit overrides passed to :func:`load_settings`, environment
variables ``HCP_<SECTION>__<FIELD>`` (e.g. ``HCP_LABELS__TAKE_PROFIT_ATR=3``), the YAML file,
then the defaults below. An invalid value fails fast with :class:`ConfigError`, whose message
names the key, the value and the allowed range.
"""

from __future__ import annotations

import difflib
import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tasks.config.backtest import BacktestSettings
from tasks.config.escalation import EscalationSettings, ReasonerSettings, RemoteSettings
from tasks.config.execution import ExecutionSettings
from tasks.config.gates import GateSettings
from tasks.config.operator import OperatorSettings
from tasks.config.shadow import ShadowSettings
from tasks.config.sizehint import SizeHintSettings
from tasks.config.trading import (
    DailySettings,
    FusionSettings,
    GuardrailSettings,
    HealthSettings,
    PolicyDefaults,
    RiskSettings,
)
from tasks.config.trust import TrustSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "app.yaml"
ENV_PREFIX = "HCP_"
#: Variables read by name, besides the settings paths ``HCP_<SECTION>__<FIELD>[__...]`` and the
#: variables named by the settings' ``*_env`` fields (e.g. ``operator.serve.token_env``).
NAMED_ENV = (
    "HCP_HOME",                # root of every output (tasks/paths.py)
    "HCP_CONFIG",              # the YAML file in force (config_path below)
    "HCP_REMOTE_BASE_URL",     # remote LLM endpoint (tasks/escalation/settings.py)
    "HCP_REMOTE_MODEL",        # remote LLM model name
    "HCP_LOCAL_BACKEND",       # first local reasoner backend
    "HCP_LOCAL_GGUF",          # GGUF file of the in-process llama.cpp backend
    "HCP_OPERATOR_TOKEN",      # default of operator.serve.token_env
    "HCP_NOTIFY_WEBHOOK_URL",  # default of operator.notify.webhook_url_env
    "HCP_FAULT_INJECT",        # tests: crash at a named point (tasks/execution/engine.py)
    "HCP_PROJECT_DIR",         # prefect.yaml: where a deployment pulls the project from
    "HCP_TRADELOG_KEY_FILE",   # the trade log's MAC key (tasks/execution/tradelog.py)
)
#: Sections the file in force must hold (those of the shipped config/app.yaml): a file without
#: one of them - cut short, or a partial copy - would run that section on code defaults.
REQUIRED_SECTIONS = ("data", "features", "labels", "regimes", "models", "runtime", "execution",
                     "escalation", "trust", "size_hint", "remote", "reasoner", "operator")


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of its allowed range."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoSettings(_Section):
    seed: int = Field(7, ge=0, description="Seed of the synthetic demo market (same seed, same bytes).")
    n_symbols: int = Field(60, ge=10, le=2000, description="Number of demo symbols.")
    n_sectors: int = Field(10, ge=2, le=11, description="Number of demo sectors (GICS names).")
    start: str = Field("2017-01-03", description="First calendar date of the demo market.")
    end: str = Field("2024-12-31", description="Last calendar date of the demo market.")
    inject_bad_rows: bool = Field(True, description="Inject a few defective rows to exercise validation.")
    reversal: float = Field(
        0.2, ge=0, le=1, description="Planted signal: each name's idiosyncratic return gives back "
        "this share of the mean of its last 5 idiosyncratic shocks (0 = nothing predictable).")


class DataSettings(_Section):
    calendar: str = Field("XNYS", description="exchange_calendars code of the trading calendar.")
    demo: DemoSettings = Field(default_factory=DemoSettings, description="Demo market generator.")
    split_min_jump: float = Field(
        0.6, gt=0.05, lt=3.0,
        description="Minimum |log| close-to-close jump (raw and adjusted) to be examined as a split.",
    )
    split_ratio_tolerance: float = Field(
        0.03, gt=0.0, le=0.2,
        description="Relative distance to a common split ratio under which a jump 'looks like a split'.",
    )
    stale_max_sessions: int = Field(
        5, ge=0, le=250,
        description="A symbol whose last bar is more than this many sessions before the data's last "
        "session (or the requested as-of) is stale.",
    )


class FeatureSettings(_Section):
    return_windows: list[int] = Field(
        [1, 5, 20, 60], description="Windows (sessions) of the log-return features."
    )
    vol_window: int = Field(20, ge=5, le=252, description="Window of realised volatility.")
    atr_window: int = Field(14, ge=2, le=100, description="Window of the ATR (simple mean of true range).")
    rsi_window: int = Field(14, ge=2, le=100, description="Window of the RSI (Wilder smoothing).")
    macd_fast: int = Field(12, ge=2, le=100, description="MACD fast EMA span.")
    macd_slow: int = Field(26, ge=3, le=200, description="MACD slow EMA span.")
    macd_signal: int = Field(9, ge=2, le=100, description="MACD signal EMA span.")
    ma_windows: list[int] = Field([20, 50, 200], description="Moving averages for distance features.")
    volume_window: int = Field(20, ge=5, le=252, description="Window of the volume z-score.")
    corr_window: int = Field(60, ge=10, le=252, description="Window of average pairwise correlation.")
    zscore_window: int = Field(252, ge=20, le=1260, description="Window of the index-vol z-score.")
    min_history: int = Field(
        60, ge=1, le=1000, description="Sessions of history a symbol needs before its features count."
    )

    @model_validator(mode="after")
    def _macd_order(self) -> FeatureSettings:
        if self.macd_fast >= self.macd_slow:
            raise ValueError("features.macd_fast must be smaller than features.macd_slow")
        if any(w < 1 for w in self.return_windows + self.ma_windows):
            raise ValueError("features windows must be >= 1")
        return self


class LabelSettings(_Section):
    horizons: dict[str, int] = Field(
        {"short": 5, "mid": 20}, description="Label horizons in sessions, by name."
    )
    take_profit_atr: float = Field(2.5, gt=0, le=20, description="Take-profit distance in ATRs.")
    stop_atr: float = Field(1.8, gt=0, le=20, description="Stop distance in ATRs.")
    same_bar: Literal["loss", "win", "drop"] = Field(
        "loss", description="Outcome when one bar touches both barriers (order unknown): "
        "'loss' (conservative), 'win', or 'drop' (label NaN)."
    )

    @model_validator(mode="after")
    def _horizons_positive(self) -> LabelSettings:
        bad = {k: v for k, v in self.horizons.items() if not 1 <= v <= 252}
        if bad:
            raise ValueError(f"labels.horizons must be in [1, 252] sessions, got {bad}")
        return self


class RegimeSettings(_Section):
    vol_feature: str = Field("vol_20", description="Feature whose training-span terciles cut regimes.")
    vol_quantiles: tuple[float, float] = Field(
        (1 / 3, 2 / 3), description="Quantiles that split low/med/high volatility."
    )
    trend_fast: int = Field(20, ge=2, le=250, description="Fast MA of the market trend test.")
    trend_slow: int = Field(50, ge=5, le=400, description="Slow MA of the market trend test.")
    trend_spread: float = Field(0.02, gt=0, le=0.5, description="|fast/slow - 1| above which: trending.")
    volatile_atr_mult: float = Field(1.5, gt=1, le=10, description="Index ATR / its average above: volatile.")
    atr_average_window: int = Field(100, ge=10, le=1000, description="Window of the average index ATR.")


class RuntimeSettings(_Section):
    n_threads: int = Field(2, ge=1, le=256, description="Threads any model or kernel may use "
                           "(on a Dask worker: per task; match the worker's threads).")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where `hcp train` fits its base models: threads = in this "
        "process, one after the other; dask = as Prefect tasks on a Dask cluster (needs the "
        "`dask` extra; docs/scale-out.md).")
    dask_address: str | None = Field(
        None, description="Scheduler of an existing Dask cluster (tcp://host:8786); none = a "
        "LocalCluster on this machine, sized by dask_workers x dask_threads_per_worker.")
    dask_workers: int | None = Field(
        None, ge=1, le=4096, description="LocalCluster workers (none = CPUs / threads per worker).")
    dask_threads_per_worker: int = Field(1, ge=1, le=256, description="LocalCluster threads per "
                                         "worker (processes, so fits do not share the GIL).")
    results_url: str | None = Field(
        None, description="Where distributed tasks read their inputs and write their results: "
        "any fsspec URL every worker can reach (s3://..., file:///shared/...); none = "
        "<HCP_HOME>/models/.work (one machine).")
    score_block_sessions: int = Field(
        63, ge=1, le=100_000, description="Sessions per scoring task of a backtest on Dask "
        "(each task scores whole sessions: the cross-sectional steps need every name of a day).")


class RandomForestSettings(_Section):
    n_estimators: int = Field(40, ge=10, le=5000, description="Trees in the random forest.")
    max_depth: int = Field(8, ge=2, le=64, description="Maximum tree depth.")
    min_samples_leaf: int = Field(100, ge=1, le=100000, description="Minimum samples per leaf.")
    max_samples: float = Field(0.33, gt=0, le=1, description="Bootstrap share of rows per tree.")


class XGBoostSettings(_Section):
    n_estimators: int = Field(300, ge=10, le=10000, description="Boosting rounds.")
    max_depth: int = Field(4, ge=1, le=16, description="Maximum tree depth.")
    learning_rate: float = Field(0.05, gt=0, le=1, description="Shrinkage per round.")
    subsample: float = Field(0.8, gt=0, le=1, description="Row share per round.")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="Feature share per tree.")
    min_child_weight: float = Field(50, ge=0, le=1e6, description="Minimum hessian per leaf.")
    max_bin: int = Field(64, ge=8, le=1024, description="Histogram bins per feature (every "
                         "XGBoost model: classifier, payoff head, ranker).")


class CatBoostSettings(_Section):
    iterations: int = Field(150, ge=10, le=10000, description="Boosting iterations.")
    depth: int = Field(5, ge=1, le=12, description="Symmetric tree depth.")
    learning_rate: float = Field(0.08, gt=0, le=1, description="Shrinkage per iteration.")
    l2_leaf_reg: float = Field(3.0, ge=0, le=1000, description="L2 regularisation of leaves.")
    border_count: int = Field(64, ge=8, le=1024, description="Histogram bins per feature.")


class RankerSettings(_Section):
    pair_method: Literal["mean", "topk"] = Field(
        "mean", description="How XGBoost draws the pairs of a session: mean = pairs_per_sample "
        "random partners per name across the whole list (the plan ranks the whole list); topk = "
        "every pair with the top names only (XGBoost's default).")
    pairs_per_sample: int = Field(1, ge=1, le=64, description="Pairs per name (mean) or the "
                                  "top-k cut (topk).")
    max_train_rows: int = Field(
        60_000, ge=1000, le=50_000_000, description="Cap on the ranker's training rows (the "
        "same sample as the classifiers when equal to models.max_train_rows).")
    horizon_max_train_rows: dict[str, int] = Field(
        default_factory=dict, description="Per-horizon caps that replace max_train_rows, by "
        "horizon name (a long horizon's labels overlap over more sessions, so each sampled row "
        "carries less new information).")

    @model_validator(mode="after")
    def _caps_in_range(self) -> RankerSettings:
        bad = {k: v for k, v in self.horizon_max_train_rows.items()
               if not 1000 <= v <= 50_000_000}
        if bad:
            raise ValueError(f"horizon_max_train_rows must be 1000..50000000 rows: {bad}")
        return self

    def rows_for(self, horizon: str) -> int:
        """The ranker's row cap for ``horizon``."""
        return self.horizon_max_train_rows.get(horizon, self.max_train_rows)


class SkillSettings(_Section):
    min_brier_skill: float = Field(
        0.0, ge=-1.0, le=1.0, description="Skilled needs the plan horizon's out-of-sample Brier "
        "skill (calibrated P(win) vs the base rate) strictly above this.")
    min_ic_t: float = Field(
        2.0, ge=0.0, le=20.0, description="Skilled also needs the Newey-West t of the daily rank "
        "IC (P(win) vs forward return, lag h-1) at or above this.")
    live_requires_skill: bool = Field(
        True, description="Live mode: an active model without measured skill (verdict no_skill "
        "or unknown) is a failing live gate. Demo/paper mode runs with a health warning.")


class ModelSettings(_Section):
    first_test_year: int = Field(
        2005, ge=1990, le=2100,
        description="First walk-forward test year; earlier years only train. Moved later "
        "automatically when the data has fewer than min_train_years before it.")
    min_train_years: int = Field(3, ge=1, le=30, description="Years of history before the first test.")
    refit_months: int = Field(12, ge=1, le=60, description="Refit the ensemble every N months.")
    window: Literal["expanding", "rolling"] = Field("expanding", description="Training window kind.")
    rolling_years: int = Field(8, ge=1, le=50, description="Length of a rolling training window.")
    embargo_sessions: int = Field(
        5, ge=0, le=252, description="Sessions after a test block excluded from training that "
        "would follow it (binds only where training data comes after a test block).")
    row_stride: int = Field(
        2, ge=1, le=20, description="Train on every N-th session (neighbouring labels overlap).")
    max_train_rows: int = Field(
        60_000, ge=1000, le=50_000_000, description="Cap on the training rows of the base "
        "classifiers and the payoff head (a random sample of the strided rows).")
    min_calibration_rows: int = Field(
        300, ge=50, le=1_000_000, description="Fewest out-of-sample rows a regime needs for a calibrator.")
    isotonic_min_rows: int = Field(
        1000, ge=100, le=1_000_000, description="Below this many rows a regime uses Platt scaling only.")
    calibration_lookback_years: int = Field(
        3, ge=1, le=50, description="Only out-of-sample rows of the last N years fit the stacker "
        "and the calibrators (older folds came from other models and other markets).")
    calibration_holdout: float = Field(
        0.25, gt=0.05, lt=0.8, description="Latest share of OOS rows that picks isotonic vs Platt.")
    max_plausible_auc: float = Field(
        0.58, gt=0.5, le=1.0, description="An out-of-sample AUC above this is presumed leakage: "
        "the baseline is flagged and not promoted automatically.")
    random_state: int = Field(42, ge=0, description="Seed of every model.")
    base_models: list[Literal["rf", "xgb", "cat"]] = Field(
        ["rf", "xgb", "cat"], min_length=1, description="Base classifiers under the stacker.")
    rf: RandomForestSettings = Field(default_factory=RandomForestSettings, description="Random forest.")
    xgb: XGBoostSettings = Field(default_factory=XGBoostSettings, description="XGBoost.")
    cat: CatBoostSettings = Field(default_factory=CatBoostSettings, description="CatBoost.")
    ranker: RankerSettings = Field(default_factory=RankerSettings,
                                   description="The session ranking model (XGBoost rank:pairwise).")
    skill: SkillSettings = Field(
        default_factory=SkillSettings, description="Skill gate: thresholds of the verdict that "
        "decides automatic promotion and the live gate.")


class AppSettings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="HCP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data: DataSettings = Field(default_factory=DataSettings, description="Market data and validation.")
    features: FeatureSettings = Field(default_factory=FeatureSettings, description="Feature kernels.")
    labels: LabelSettings = Field(default_factory=LabelSettings, description="Triple-barrier labels.")
    regimes: RegimeSettings = Field(default_factory=RegimeSettings, description="Regime detection.")
    models: ModelSettings = Field(default_factory=ModelSettings, description="Ensemble and walk-forward.")
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings, description="Compute limits.")
    fusion: FusionSettings = Field(default_factory=FusionSettings, description="Edges, fusion, gates.")
    policy: PolicyDefaults = Field(default_factory=PolicyDefaults, description="First policy version.")
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings, description="Sizing.")
    risk: RiskSettings = Field(default_factory=RiskSettings, description="Hard clamps (ceilings).")
    health: HealthSettings = Field(default_factory=HealthSettings, description="Daily health checks.")
    daily: DailySettings = Field(default_factory=DailySettings, description="The daily run.")
    operator: OperatorSettings = Field(default_factory=OperatorSettings,
                                       description="Status service and notifications.")
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings, description="Intraday execution.")
    escalation: EscalationSettings = Field(default_factory=EscalationSettings, description="Triggers.")
    remote: RemoteSettings = Field(default_factory=RemoteSettings, description="Remote LLM.")
    reasoner: ReasonerSettings = Field(default_factory=ReasonerSettings, description="Local LLM.")
    backtest: BacktestSettings = Field(default_factory=BacktestSettings, description="Backtests.")
    gates: GateSettings = Field(default_factory=GateSettings, description="Promotion gates.")
    shadow: ShadowSettings = Field(default_factory=ShadowSettings,
                                   description="Shadow comparison and rollback guard.")
    trust: TrustSettings = Field(default_factory=TrustSettings, description="Trust in the blend's sources.")
    size_hint: SizeHintSettings = Field(default_factory=SizeHintSettings,
                                        description="The learned size hint and its gate.")

    @model_validator(mode="after")
    def _plan_horizon_known(self) -> AppSettings:
        if self.fusion.plan_horizon not in self.labels.horizons:
            raise ValueError(f"fusion.plan_horizon {self.fusion.plan_horizon!r} is not one of the "
                             f"label horizons {sorted(self.labels.horizons)}")
        unknown = sorted(set(self.models.ranker.horizon_max_train_rows) - set(self.labels.horizons))
        if unknown:
            raise ValueError(f"models.ranker.horizon_max_train_rows names {unknown}, not label "
                             f"horizons {sorted(self.labels.horizons)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Init kwargs (the YAML file merged with explicit overrides) lose to the environment."""
        return env_settings, init_settings


def config_path() -> Path:
    """The YAML file in force: ``$HCP_CONFIG``, else ``$HCP_HOME/config/app.yaml``, else the project's."""
    if os.environ.get("HCP_CONFIG"):
        return Path(os.environ["HCP_CONFIG"])
    home = os.environ.get("HCP_HOME")
    if home and (Path(home) / "config" / "app.yaml").is_file():
        return Path(home) / "config" / "app.yaml"
    return DEFAULT_CONFIG


def _duplicate_keys(node: yaml.Node, where: str, path: Path, seen: set[int]) -> None:
    """Refuse a mapping that names a key twice (YAML lets the last one win, silently)."""
    if id(node) in seen:  # an alias of a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
            line = key.start_mark.line + 1
            dotted = f"{where}.{name}" if where else str(name)
            if name in lines:
                raise ConfigError(f"config file {path}: key {dotted} is set twice (lines "
                                  f"{lines[name]} and {line}; the last would silently win): "
                                  "keep one")
            lines[name] = line
            _duplicate_keys(value, dotted, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, f"{where}[{i}]", path, seen)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's mapping; refused (one line) when missing, not YAML, empty (nothing but
    comments), not a mapping, or naming a key twice."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (set HCP_CONFIG or create it)")
    try:
        loader = yaml.SafeLoader(path.read_bytes())
        loader.name = str(path)
        try:
            node = loader.get_single_node()
            if node is not None:
                _duplicate_keys(node, "", path, set())
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {what}") from exc
    if raw is None:
        raise ConfigError(f"config file {path} is empty (no settings in it; code defaults are "
                          "never run in its place): restore it from config/app.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def missing_sections(raw: dict[str, Any]) -> list[str]:
    """The required sections (:data:`REQUIRED_SECTIONS`) absent from ``raw`` or empty in it."""
    return [name for name in REQUIRED_SECTIONS if raw.get(name) in (None, {})]


def require_complete(path: Path, raw: dict[str, Any]) -> None:
    """The file in force must be whole: every required section, and its last line ended (a
    write cut short stops mid-line). Refused in one line otherwise."""
    missing = missing_sections(raw)
    if missing:
        raise ConfigError(f"config file {path} lacks the section{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)} (a file cut short or a partial copy would run "
                          "them on code defaults): restore them from the project's config/app.yaml")
    if not path.read_bytes().endswith(b"\n"):
        raise ConfigError(f"config file {path} does not end with a newline (a write cut short?): "
                          "check its last line against the project's config/app.yaml")


def in_force(path: Path | None) -> bool:
    """Whether ``path`` (None: the default lookup) is the file in force (:func:`config_path`)."""
    if path is None:
        return True
    try:
        return Path(path).resolve() == config_path().resolve()
    except OSError:
        return False


def partial_sections(path: Path | None) -> list[str]:
    """For a file other than the one in force: the required sections it leaves to the code
    defaults (an overlay); [] for the file in force (it is refused when it lacks one)."""
    return [] if in_force(path) else missing_sections(_read_yaml(Path(path)))


def check_calendar(code: str, source: str = "settings") -> None:
    """Refuse a calendar code exchange_calendars does not know, naming the closest ones (the
    default XNYS is known: the package is only imported for another code)."""
    if code == DataSettings.model_fields["calendar"].default:
        return
    import exchange_calendars as xcals

    names = xcals.get_calendar_names(include_aliases=True)
    if code in names:
        return
    close = difflib.get_close_matches(code.upper(), names, n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else "e.g. XNYS, XLON, XTSE"
    raise ConfigError(f"data.calendar = {code!r} ({source}) is not an exchange_calendars "
                      f"calendar ({hint}; the list: exchange_calendars.get_calendar_names())")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def _field_range(loc: tuple[Any, ...]) -> str:
    """The allowed range of the field at ``loc``, read from its constraints ('' if none)."""
    model: Any = AppSettings
    info = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        info = fields[part]
        model = info.annotation
    if info is None:
        return ""
    bounds = []
    for meta in info.metadata:
        if isinstance(meta, Ge):
            bounds.append(f">= {meta.ge}")
        elif isinstance(meta, Gt):
            bounds.append(f"> {meta.gt}")
        elif isinstance(meta, Le):
            bounds.append(f"<= {meta.le}")
        elif isinstance(meta, Lt):
            bounds.append(f"< {meta.lt}")
    return " and ".join(bounds)


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Turn pydantic's error list into lines naming key, value, problem and allowed range."""
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        allowed = _field_range(tuple(err["loc"]))
        hint = f"; allowed: {allowed}" if allowed else ""
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(f"  - {key}{shown}: {err['msg']}{hint}")
    return "\n".join(lines)


def _model_of(ann: Any) -> type[BaseModel] | None:
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _branches(ann: Any) -> list[Any]:
    """The non-None members of a union annotation (or the annotation itself)."""
    if get_origin(ann) in (Union, types.UnionType):
        return [a for a in get_args(ann) if a is not type(None)]
    return [ann]


def _dict_keys(ann: Any) -> tuple[list[str] | None, Any] | None:
    """For ``dict[K, V]``: (K's literal values, or None for any key; V); else None."""
    if get_origin(ann) is not dict:
        return None
    key, value = (get_args(ann) + (Any, Any))[:2]
    keys = [str(k) for k in get_args(key)] if get_origin(key) is Literal else None
    return keys, value


def _resolves(parts: list[str], ann: Any) -> bool:
    """Whether the lower-case path ``parts`` names a field at or below annotation ``ann``."""
    if not parts:
        return True
    for branch in _branches(ann):
        model = _model_of(branch)
        if model is not None:
            fields = {name.lower(): info for name, info in model.model_fields.items()}
            if parts[0] in fields and _resolves(parts[1:], fields[parts[0]].annotation):
                return True
            continue
        kv = _dict_keys(branch)
        if kv is not None:
            keys, value = kv
            if (keys is None or parts[0] in [k.lower() for k in keys]) \
                    and _resolves(parts[1:], value):
                return True
    return False


def _env_paths(ann: Any, prefix: str) -> list[str]:
    """Every settings path variable at or below ``ann`` (for suggestions)."""
    out: list[str] = []
    for branch in _branches(ann):
        model = _model_of(branch)
        kv = _dict_keys(branch)
        if model is not None:
            children = [(name, info.annotation) for name, info in model.model_fields.items()]
        elif kv is not None and kv[0] is not None:
            children = [(key, kv[1]) for key in kv[0]]
        else:
            continue
        for name, child in children:
            path = f"{prefix}{'__' if prefix != ENV_PREFIX else ''}{name.upper()}"
            out += [path, *_env_paths(child, path)]
    return out


def _named_by_settings(model: type[BaseModel], data: Any, prefix: str) -> set[str]:
    """Variables named by ``*_env`` fields: their defaults, the YAML's values and the values of
    their own overrides in the environment."""
    names: set[str] = set()
    data = data if isinstance(data, dict) else {}
    for name, info in model.model_fields.items():
        path = f"{prefix}{'__' if prefix != ENV_PREFIX else ''}{name.upper()}"
        sub = _model_of(info.annotation)
        if sub is not None:
            names |= _named_by_settings(sub, data.get(name), path)
        elif name.endswith("_env"):
            for value in (info.default, data.get(name), os.environ.get(path)):
                if isinstance(value, str) and value:
                    names.add(value)
    return names


def unknown_env(environ: dict[str, str] | None = None, data: dict[str, Any] | None = None
                ) -> list[str]:
    """``HCP_*`` variables that are neither a settings path nor a variable the project reads."""
    environ = os.environ if environ is None else environ
    named = set(NAMED_ENV) | _named_by_settings(AppSettings, data or {}, ENV_PREFIX)
    return sorted(name for name in environ
                  if name.startswith(ENV_PREFIX) and name not in named
                  and not _resolves(name[len(ENV_PREFIX):].lower().split("__"), AppSettings))


def check_env(environ: dict[str, str] | None = None, data: dict[str, Any] | None = None) -> None:
    """Refuse misspelt ``HCP_*`` variables (they would be ignored silently): one line naming
    each and the closest valid name."""
    bad = unknown_env(environ, data)
    if not bad:
        return
    valid = sorted(set(NAMED_ENV) | set(_env_paths(AppSettings, ENV_PREFIX))
                   | _named_by_settings(AppSettings, data or {}, ENV_PREFIX))
    parts = []
    for name in bad:
        close = difflib.get_close_matches(name.upper(), valid, n=1)
        parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
    noun = "variable" if len(bad) == 1 else "variables"
    raise ConfigError(f"unknown environment {noun} {', '.join(parts)}: unset it or use "
                      "HCP_<SECTION>__<FIELD> (see `hcp config show`)")


def load_settings(path: Path | None = None, **overrides: Any) -> AppSettings:
    """Load and validate the settings tree; raise :class:`ConfigError` with a readable message
    (also for an ``HCP_*`` variable that names no setting: see :func:`check_env`).

    The file in force (``path`` None, or the file :func:`config_path` names) must be whole
    (:func:`require_complete`); another file named by ``path`` may hold only some sections
    (an overlay on the code defaults, as tests and `hcp config check FILE` use)."""
    whole = in_force(path)
    path = path or config_path()
    raw = _read_yaml(path)
    if whole:
        require_complete(path, raw)
    data = _deep_merge(raw, overrides)
    check_env(data=data)
    try:
        settings = AppSettings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{path} + HCP_* environment")) from exc
    check_calendar(settings.data.calendar, f"{path} + HCP_* environment")
    return settings
