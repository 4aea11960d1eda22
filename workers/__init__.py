"""veo-archiver's workers: download each finished video before its URL expires and archive it."""
