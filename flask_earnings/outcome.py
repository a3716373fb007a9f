"""How a call ended and what it earned: read the reply, count the tokens, price the task.

Runs in the background writer, once per task, after the reply has been sent.
"""

from __future__ import annotations

import logging

from .pricing import price
from .replies import Prompt, Reply, UnreadableReplyError, estimate_tokens, read_prompt
from .spool import Started
from .tasks import EarningsBreakdown, Task, TaskStatus, TokensSource
from .tracking import Ending, TaskRun

logger = logging.getLogger("flask_earnings")


def journalled(run: TaskRun) -> Started:
    """What the journal keeps of a task when it starts: all that is known of it then."""
    route = run.route
    return Started(
        run.id,
        route.framework,
        route.protocol,
        route.task_type,
        route.path,
        run.created_at,
        run.request_id,
        run.device_id,
        run.client,
        run.rates.number,
    )


def started_task(run: TaskRun) -> Task:
    """The task as it stands once it runs: nothing known yet of its reply."""
    return begun_task(journalled(run))


def begun_task(started: Started, *, status: TaskStatus = TaskStatus.RUNNING, error: str | None = None) -> Task:
    """A task of which only its start is known: running, or (from a dead process's journal)
    interrupted."""
    return Task(
        id=started.id,
        request_id=started.request_id,
        status=status,
        framework=started.framework,
        protocol=started.protocol,
        task_type=started.task_type,
        endpoint=started.endpoint,
        model=None,
        device_id=started.device_id,
        client=started.client,
        streamed=False,
        input_tokens=None,
        output_tokens=None,
        cached_tokens=None,
        reasoning_tokens=None,
        tokens_source=None,
        created_at=started.created_at,
        started_at=started.created_at,
        finished_at=None,
        duration_ms=None,
        http_status=None,
        error=error,
        rate_version=started.rate_version,
        earnings=None,
    )


def finished_task(run: TaskRun, *, pay_cancelled: bool) -> Task:
    """The task as its reply left it: completed and priced, failed, or cancelled.

    A cancelled task (the client went away) keeps the tokens streamed until then, and is
    paid for them when ``pay_cancelled`` (``EARNINGS_CANCELLED_POLICY = "partial"``).
    """
    prompt = read_prompt(run.request_body)
    reply, unreadable = _read_reply(run)
    status, error = _status(run, reply, unreadable)
    model = prompt.model or reply.model
    input_tokens, output_tokens, source = _tokens(run, prompt, reply)
    earnings = None
    if status is TaskStatus.COMPLETED or (status is TaskStatus.CANCELLED and pay_cancelled):
        earnings = _price(run, model, input_tokens, output_tokens)
    route, usage = run.route, reply.usage
    return Task(
        id=run.id,
        request_id=run.request_id,
        status=status,
        framework=route.framework,
        protocol=route.protocol,
        task_type=route.task_type,
        endpoint=route.path,
        model=model,
        device_id=run.device_id,
        client=run.client,
        streamed=run.streamed,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=usage.cached_tokens if usage else None,
        reasoning_tokens=usage.reasoning_tokens if usage else None,
        tokens_source=source,
        created_at=run.created_at,
        started_at=run.created_at,
        finished_at=run.finished_at,
        duration_ms=run.duration_ms,
        http_status=run.http_status,
        error=error,
        rate_version=run.rates.number,
        earnings=earnings,
    )


def _read_reply(run: TaskRun) -> tuple[Reply, str | None]:
    if run.reader is None:
        return Reply(), None
    try:
        return run.reader.result(), None
    except UnreadableReplyError as problem:
        return Reply(), str(problem)


def _status(run: TaskRun, reply: Reply, unreadable: str | None) -> tuple[TaskStatus, str | None]:
    """How the call ended, and why it failed if it did."""
    failed = TaskStatus.FAILED
    if run.ending is Ending.RAISED:
        return failed, run.error or "the view raised"
    if run.ending is Ending.BROKEN:
        return failed, f"reply broken off: {run.error}"
    http_status = run.http_status or 0
    if not 200 <= http_status < 300:
        return failed, run.error or reply.error or f"HTTP {http_status}"
    if reply.error is not None:
        return failed, reply.error
    if run.ending is Ending.CANCELLED:
        return TaskStatus.CANCELLED, None
    if unreadable is not None:
        return failed, f"unreadable reply: {unreadable}"
    if reply.truncated:
        return failed, "the stream stopped before its end"
    return TaskStatus.COMPLETED, None


def _tokens(run: TaskRun, prompt: Prompt, reply: Reply) -> tuple[int, int, TokensSource]:
    if reply.usage is not None:
        return reply.usage.input_tokens, reply.usage.output_tokens, TokensSource.REPORTED
    if reply.usage_problem is not None:
        logger.warning("Task %s: the reply's usage is malformed (%s); tokens estimated", run.id, reply.usage_problem)
    if run.route.task_type == "embeddings":
        output = 0
    elif reply.output_chars or not reply.output_events:
        output = estimate_tokens(reply.output_chars)
    else:  # a stream that was to carry its counts but stopped short: an event is about a token
        output = reply.output_events
    return prompt.estimated_tokens(), output, TokensSource.ESTIMATED


def _price(run: TaskRun, model: str | None, input_tokens: int, output_tokens: int) -> EarningsBreakdown:
    route = run.route
    rate, own_entry = run.rates.table.lookup(route.framework, route.task_type, model)
    if not own_entry and (route.framework, route.task_type) not in run.rates.defaulted:
        run.rates.defaulted.add((route.framework, route.task_type))
        logger.warning("No earnings rate for %s/%s, using default", route.framework, route.task_type)
    return price(rate, input_tokens=input_tokens, output_tokens=output_tokens, duration_ms=run.duration_ms or 0)
