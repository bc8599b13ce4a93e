"""The live conformance suite (`make conformance`): see suite.py."""
