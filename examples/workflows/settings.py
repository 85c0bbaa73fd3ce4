"""Settings of the workflow example (environment variables WORKFLOWS_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["WorkflowSettings"]


class WorkflowSettings(BaseSettings):
    """How many workflows `make run` starts, and how each behaves."""

    model_config = SettingsConfigDict(env_prefix="WORKFLOWS_", extra="ignore")

    count: int = Field(50, ge=1, le=100_000, description="workflows to run (WORKFLOWS_COUNT)")
    steps: int = Field(3, ge=1, le=100, description="progress-reporting activities per workflow")
    step_ms: float = Field(20.0, ge=0, description="the work each step does besides reporting (ms)")
    tag: str = Field("", pattern=r"^[A-Za-z0-9_-]*$", description="id suffix; random when empty")
    activity_concurrency: int = Field(100, ge=1, description="activities one worker runs at once")
    timeout_s: float = Field(300.0, gt=0, description="how long the run waits for every workflow")
    results_file: Path | None = Field(None, description="where the run writes what it expects (tests)")
    # For the crash test only: each execution of step 2 appends a line to this file; the
    # first one (no file yet) publishes its progress and then hangs until the app is killed.
    crash_marker: Path | None = None
    dapr_grpc_port: int = Field(50001, validation_alias="DAPR_GRPC_PORT")
