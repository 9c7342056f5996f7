"""The Redis backend (one server, Sentinel, Cluster): the store, its Lua write functions, the keyspace,
connections and topologies, replication waits, fleet presence and ACL roles.

Nothing here imports another backend; the shared pieces (models, errors, validation, wire) are in
:mod:`promptreg.registry`.
"""
