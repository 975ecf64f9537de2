"""Promotion decisions: who moved the champion and why, from the trigger's reason and a person's approval.

The registry (:mod:`airloop.store.registry`) keeps the record; this module decides what goes in it.
"""

from __future__ import annotations

from typing import Any

from airloop.config import PipelineConfig
from airloop.store import promotions

GATE_ACTOR = "airloop-gate"  # who promotes when no person has to approve


def promote_challenger(
    cfg: PipelineConfig, version: str, *, reason: str = "", approval: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Make the blessed challenger ``version`` the champion.

    ``approval`` is a person's decision ({"approved_by", "decision", ...}) when ``promotion.approval`` is
    required, else None; ``reason`` is the trigger's reason (empty: "approved in Airflow" or "blessed by the
    gate"). The actor is the approver, else ``GATE_ACTOR``. Returns :func:`airloop.store.promotions.promote`'s
    record. Raises promotions.ChampionMoved (recorded, nothing moves) when the champion is no longer the one
    the gate compared ``version`` against.
    """
    actor = approval["approved_by"] if approval else GATE_ACTOR
    reason = reason or ("approved in Airflow" if approval else "blessed by the gate")
    # Only over the champion the gate compared with (promotions.ChampionMoved otherwise).
    return promotions.promote(cfg, version, reason=reason, actor=actor, approval=approval, check_gate=True)


def record_if_rejected(cfg: PipelineConfig, version: str, approval: dict[str, Any] | None) -> dict[str, Any] | None:
    """Record a person's rejection of ``version`` (:func:`airloop.store.promotions.record_rejection`).

    Returns the record, or None when there is no decision yet or the person approved.
    """
    if approval is None or approval["decision"] == "Approve":
        return None
    return promotions.record_rejection(cfg, version, approval)
