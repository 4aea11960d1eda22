"""The providers: one pure module each (no I/O), and this registry, the only list of their names.

Standard Webhooks sources (:mod:`veo_archiver.providers.standard`) are configured per source and have no
status API, so they are not in the registry.
"""

from __future__ import annotations

from veo_archiver.providers import apixo, evolink, kie, useapi
from veo_archiver.providers.base import ProviderSpec

REGISTRY: dict[str, ProviderSpec] = {spec.name: spec for spec in (kie.SPEC, apixo.SPEC, useapi.SPEC, evolink.SPEC)}
#: every provider name, in the order the README lists them
NAMES: tuple[str, ...] = tuple(REGISTRY)
