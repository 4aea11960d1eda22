"""Faithful stand-ins for the providers' clouds: they send documented callbacks and serve real bytes.

Used by ``veo-archiver simulate`` (so a newcomer can watch a video get archived) and by the tests.
"""
