"""Budgets in tokens and USD: reserve an estimate before a call, settle with actual usage after."""

from fanout.budget._budget import Budget, Reservation

__all__ = ["Budget", "Reservation"]
