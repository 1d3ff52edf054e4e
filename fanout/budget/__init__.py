"""Budgets in tokens and USD: reserve an estimate before a call, settle with actual usage after.

``BudgetLedger`` shares one job budget among many workers by allowances."""

from fanout.budget._budget import Budget, Reservation
from fanout.budget._ledger import Allowance, BudgetLedger

__all__ = ["Allowance", "Budget", "BudgetLedger", "Reservation"]
