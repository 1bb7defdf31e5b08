"""The counting service behind serve.py: a web page and an HTTP API (FastAPI), loaded only by serve.py."""
