"""Patron: terminal-first email campaign manager for retention marketing (the application shell)."""
