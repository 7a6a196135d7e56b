"""Logs, metrics and the masking of secrets and phone numbers in them."""
