"""Output-level cache: the guided model output forecast by a backtest-fitted blend, on an
evaluation budget placed by the measured error."""
from __future__ import annotations

from .budget import BudgetSchedule, evaluation_budget
from .predictor import CANDIDATES, BacktestResult, OutputPredictor
from .run import OutputCacheRun, OutputCall

__all__ = ["BudgetSchedule", "evaluation_budget", "CANDIDATES", "BacktestResult", "OutputPredictor",
           "OutputCacheRun", "OutputCall"]
