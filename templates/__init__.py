"""MJML templates shipped with Patron."""
