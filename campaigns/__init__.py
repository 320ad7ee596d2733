"""Campaigns: lifecycle, scheduling, rendering, delivery, deliverability, bounces, metrics."""
