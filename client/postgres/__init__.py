"""How the client follows a PostgreSQL registry: the LISTEN feed and the reads of its state."""
