"""Local Sentinel, Cluster and PostgreSQL deployments on free loopback ports, for the tests and the
benchmarks only (not part of the installed package)."""
