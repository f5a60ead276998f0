#!/usr/bin/env python3
"""The fault-injection driver (t/chaos/chaos.py) in its short form: every
fault for a few seconds under authenticated load, then lost = 0,
duplicates = 0, no crash, no sanitizer report, recovery times printed.
T_CHAOS_DURATION sets the seconds per fault (default 2)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "chaos"))
import chaos  # noqa: E402

sys.exit(chaos.main(["--duration", os.environ.get("T_CHAOS_DURATION", "2"), "--warmup", "1.5"]))
