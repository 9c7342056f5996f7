"""The PostgreSQL backend: the store, its connections (and the change channel's NOTIFY) and the schema
with its migrations.

Nothing here imports another backend; the shared pieces are in :mod:`promptreg.registry`.
"""
