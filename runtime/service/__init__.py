"""The bedside streaming service: pipelines, sources, sinks, journal, HTTP."""
