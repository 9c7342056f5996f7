"""How the client follows a Redis registry: the change feed (pub/sub, Sentinel, Cluster), the
connections it subscribes and reads with, the index read at start-up and after a gap, the version
reads, and the replica's role checks."""
