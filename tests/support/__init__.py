"""Shared test helpers: in-process and subprocess servers, certificates, Kubernetes
rendering, tiny model builders. Imported as ``tests.support.<module>``."""
