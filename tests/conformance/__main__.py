"""`python -m tests.conformance`: the live conformance suite (tests/conformance/suite.py)."""

import sys

from tests.conformance.suite import main

sys.exit(main())
