"""The counting service behind serve.py: a web page and an HTTP API (FastAPI), loaded only by serve.py."""
# Before anything here loads OpenCV: crowd_datasets sets OpenCV's own decoding limit, read once as it loads.
import crowd_datasets  # noqa: F401
