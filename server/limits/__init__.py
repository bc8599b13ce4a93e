"""Stores of the caller limits (server/core/limits.py): in process for one replica, Redis for many."""
