"""Command-line tools: ``coord`` (serve, dev cluster) and ``coordctl`` (operations)."""
