"""The audience: contacts, lists, subscriptions, consent ledger, suppressions, segments, imports, orders."""
