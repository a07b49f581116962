"""Generated code; see generate.py."""
