"""Backend locators: plain frozen dataclasses that dialects build and backends read.

One module per backend, with no SDK imports, so a dialect can describe an
object without importing the backend that will fetch it.
"""
