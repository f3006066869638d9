"""The REST API: a thin HTTP shell over :mod:`shopsense.services.serving` (no SQL, ranking or model code)."""
