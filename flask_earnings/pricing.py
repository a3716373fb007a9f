"""The earnings formula of the original module, in exact decimals."""

from __future__ import annotations

from .money import MONEY_CONTEXT
from .rates import Rate
from .tasks import EarningsBreakdown


def price(rate: Rate, *, input_tokens: int, output_tokens: int, duration_ms: int) -> EarningsBreakdown:
    """``input_tokens × input + output_tokens × output + base + duration bonus``.

    Exact by construction: the money context traps any rounding.
    """
    context = MONEY_CONTEXT
    input_reward = context.multiply(rate.input, input_tokens)
    output_reward = context.multiply(rate.output, output_tokens)
    duration_bonus = rate.duration_bonus.for_duration(duration_ms)
    total = context.add(context.add(context.add(input_reward, output_reward), rate.base), duration_bonus)
    return EarningsBreakdown(input_reward, output_reward, rate.base, duration_bonus, total)
