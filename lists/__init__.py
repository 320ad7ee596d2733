"""The audience: contacts, lists, consent, suppressions, segments, imports and orders."""
