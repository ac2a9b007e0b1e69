"""Foundations every streamtalk package shares; torch-free, importable from anywhere."""
