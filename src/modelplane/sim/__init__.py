"""The simulator: replay a trace under policies through the production ``core`` functions."""

from modelplane.sim.cli import sim_run
from modelplane.sim.engine import Arrival, RunMetrics, simulate
from modelplane.sim.runner import SimulationResult, run_simulation

__all__ = ["Arrival", "RunMetrics", "SimulationResult", "run_simulation", "sim_run", "simulate"]
