"""Shared Ledger core: typed operations, the append-only ledger, balances.

This app knows nothing of the apps that use it. Consumer apps declare a
``LedgerOperation`` subclass, register it from ``AppConfig.ready()`` and post
through ``ledger_core.services``.
"""
