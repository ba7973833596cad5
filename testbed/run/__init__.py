"""Running a workload: preflight, servers, collectors, clients, the run directory."""
