"""A testbed that is up: the Network API, its status, link validation."""
