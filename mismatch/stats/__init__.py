"""Statistics of the report and the planner: two-level intervals, run-level tests, variance
components, power and group-sequential boundaries (numpy, SciPy and pandas only)."""
