"""Chaos testing tools: history recording and linearizability checking."""
