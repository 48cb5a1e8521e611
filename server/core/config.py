"""One typed settings class for every vitsweep process, read from ``VITSWEEP_*`` environment variables."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_EXAMPLES = {
    "database_url": "postgresql+psycopg://user@host/db or sqlite:////abs/path/vitsweep.db",
    "mlflow_tracking_uri": "http://mlflow:5000 or sqlite:////abs/path/mlflow.db",
}


class Settings(BaseSettings):
    """Runtime configuration.

    The embedded default keeps everything under ``home`` (``.vitsweep/``): a SQLite database shared by the
    sweep store and Optuna, and a SQLite MLflow store with its artifacts. Scale-out replaces the URLs only.
    """

    model_config = SettingsConfigDict(env_prefix="VITSWEEP_", extra="ignore")

    home: Path = Field(default=Path(".vitsweep"), description="Root of the embedded stack's files.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the sweep store and Optuna storage; SQLite under home if unset."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; a SQLite store under home if unset."
    )
    mlflow_artifacts_dir: Path | None = Field(
        default=None, description="Artifact root of the embedded MLflow store; home/mlartifacts if unset."
    )
    mlflow_experiment: str = Field(default="vitsweep", min_length=1, max_length=200)
    data_dir: Path | None = Field(default=None, description="Where datasets are read from; home/data if unset.")
    download: bool = Field(default=False, description="Allow dataset downloads where a network exists.")
    check_data: bool = Field(
        default=True, description="Refuse at submission a sweep whose dataset files or model.pretrained weights are "
        "absent from data_dir; turn off where the API runs on a machine that does not share the workers' data dir.")

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_url: str | None = Field(default=None, description="Where the CLI finds the API; from host and port if unset.")
    api_token: SecretStr | None = Field(default=None, description="Bearer token required by mutating endpoints.")
    protect_reads: bool = Field(
        default=False, description="Read-only endpoints need the bearer token too (/healthz stays open)."
    )
    mlflow_ui_port: int = Field(default=5000, ge=1, le=65535)
    dashboard_port: int = Field(default=8080, ge=1, le=65535)
    mlflow_ui_url: str | None = None
    dashboard_url: str | None = None

    lease_seconds: float = Field(default=60.0, gt=0, description="A running trial is reclaimed after this long without heartbeat.")
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100, description="Claims of one trial before it is failed.")
    poll_seconds: float = Field(default=1.0, gt=0, description="Idle worker's pause between empty claims.")
    sync_checkpoints: bool = Field(
        default=True,
        description="Copy each resumable checkpoint to the trial's MLflow run, so a worker on another machine can resume it.",
    )
    maintenance_seconds: float = Field(
        default=5.0, ge=0, le=3600,
        description="How often the API ends sweeps past their timeout and reaps expired leases (0: never).",
    )
    system_metrics_seconds: float = Field(
        default=10.0, ge=0, le=3600,
        description="How often a trial's MLflow run samples system metrics (CPU, memory, GPUs); 0 turns them off.",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    spec_check_seconds: float = Field(
        default=10.0, gt=0, le=3600,
        description="A submission's plan check (every model it can build, on the meta device) may take this long; "
        "then it is stopped and the spec refused (422) naming the model being built.",
    )
    spec_check_memory_mb: int = Field(
        default=2048, ge=64, le=1 << 20, description="Memory a plan check may take beyond what its process starts with.",
    )
    spec_checks: int = Field(
        default=2, ge=1, le=64,
        description="Plan checks run at once (each in a process of its own); a submission that waits longer than "
        "spec_check_seconds for its turn gets 503 with Retry-After.",
    )
    db_wait_seconds: float = Field(
        default=45.0, ge=0, le=3600,
        description="How long a worker waits for an unreachable database (a PostgreSQL restart) before giving up.",
    )

    @field_validator("database_url", "mlflow_tracking_uri", mode="after")
    @classmethod
    def _not_empty(cls, value: str | None, info: ValidationInfo) -> str | None:
        # An empty variable (VITSWEEP_DATABASE_URL= in a compose file whose source was unset) must not quietly
        # mean the embedded SQLite store: workers would train into a database nobody else reads.
        if value is not None and not value.strip():
            name = f"VITSWEEP_{(info.field_name or '').upper()}"
            raise ValueError(f"{name} is set but empty: unset it for the embedded SQLite store under VITSWEEP_HOME, "
                             f"or give a URL ({_EXAMPLES[info.field_name or '']})")
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except ArgumentError:
                raise ValueError(f"VITSWEEP_DATABASE_URL is not a database URL: {_mask_password(value)!r} "
                                 f"(e.g. {_EXAMPLES['database_url']})") from None
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _reads_need_a_token(self) -> Settings:
        if self.protect_reads and not (self.api_token and self.api_token.get_secret_value()):
            raise ValueError("VITSWEEP_PROTECT_READS needs VITSWEEP_API_TOKEN: there is no token to protect reads with")
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # The token is a SecretStr already; URLs may carry a password (postgresql://user:secret@host/db).
        for name, value in super().__repr_args__():
            yield name, _mask_password(value) if name in ("database_url", "mlflow_tracking_uri", "api_url") else value

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'vitsweep.db'}"

    @cached_property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @cached_property
    def artifacts_root(self) -> Path:
        return (self.mlflow_artifacts_dir or self.home / "mlartifacts").expanduser().resolve()

    @cached_property
    def datasets_dir(self) -> Path:
        return (self.data_dir or self.home / "data").expanduser().resolve()

    @cached_property
    def base_url(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")

    @cached_property
    def mlflow_ui(self) -> str:
        if self.mlflow_ui_url:
            return self.mlflow_ui_url
        uri = self.tracking_uri
        return uri if uri.startswith("http") else f"http://127.0.0.1:{self.mlflow_ui_port}"

    @cached_property
    def dashboard(self) -> str:
        return self.dashboard_url or f"http://127.0.0.1:{self.dashboard_port}"

    def ensure_home(self) -> None:
        """Create the embedded stack's directories (only those this configuration uses)."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.mlflow_tracking_uri is None:
            self.artifacts_root.mkdir(parents=True, exist_ok=True)


def _mask_password(url: Any) -> Any:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``; anything else unchanged."""
    if not isinstance(url, str):
        return url
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", url)

