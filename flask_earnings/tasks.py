"""What the extension tells the world about a task: its status and immutable snapshots."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .money import format_money


class TaskStatus(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: Left ``running`` by a process that died.
    INTERRUPTED = "interrupted"


class TokensSource(enum.StrEnum):
    #: The counts the upstream reported.
    REPORTED = "reported"
    #: ``ceil(characters / 4)`` of the text, because the upstream reported nothing.
    ESTIMATED = "estimated"


@dataclass(frozen=True, slots=True)
class EarningsBreakdown:
    """``total = input_reward + output_reward + base_reward + duration_bonus``, exactly."""

    input_reward: Decimal
    output_reward: Decimal
    base_reward: Decimal
    duration_bonus: Decimal
    total: Decimal

    def to_dict(self) -> dict[str, str]:
        return {
            "input_reward": format_money(self.input_reward),
            "output_reward": format_money(self.output_reward),
            "base_reward": format_money(self.base_reward),
            "duration_bonus": format_money(self.duration_bonus),
            "total": format_money(self.total),
        }


@dataclass(frozen=True, slots=True)
class Task:
    """A task as it stood at one moment; signals and :meth:`Earnings.get_task` hand these out."""

    id: str
    request_id: str | None
    status: TaskStatus
    framework: str
    protocol: str
    task_type: str
    endpoint: str
    model: str | None
    device_id: str | None
    client: str | None
    streamed: bool
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    tokens_source: TokensSource | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    http_status: int | None
    error: str | None
    rate_version: int | None
    earnings: EarningsBreakdown | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601, money as decimal strings."""
        return {
            "id": self.id,
            "request_id": self.request_id,
            "status": self.status.value,
            "framework": self.framework,
            "protocol": self.protocol,
            "task_type": self.task_type,
            "endpoint": self.endpoint,
            "model": self.model,
            "device_id": self.device_id,
            "client": self.client,
            "streamed": self.streamed,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "tokens_source": None if self.tokens_source is None else self.tokens_source.value,
            "created_at": self.created_at.isoformat(),
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "duration_ms": self.duration_ms,
            "http_status": self.http_status,
            "error": self.error,
            "rate_version": self.rate_version,
            "earnings": None if self.earnings is None else self.earnings.to_dict(),
        }
