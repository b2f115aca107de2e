"""Test helpers: real instance servers run as subprocesses, and small waiting utilities."""
