"""Tests (a package, so that test helpers are imported by name: tests.<dir>.<module>)."""
