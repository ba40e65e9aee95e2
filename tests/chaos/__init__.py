"""The chaos suite: real faults, a recorder and a checker (see harness.py)."""
