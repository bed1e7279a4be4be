"""The node's HTTP port: /metrics, /healthz, /readyz and the status page (with its static files)."""
