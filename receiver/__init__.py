"""veo-archiver's HTTP edge: verify provider callbacks and enqueue them durably."""

__version__ = "0.1.0"
