"""The planner: a validated topology becomes an explicit, printable plan."""
