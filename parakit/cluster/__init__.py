"""ipyparallel engines, device pinning, launching a run and following it."""
