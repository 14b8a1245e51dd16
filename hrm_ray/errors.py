"""Errors a user can cause and fix: the CLI prints them on one line and exits 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, field, flag or value); the message names it."""
