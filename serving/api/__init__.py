"""The API room: the operator page and the station's HTTP API. Reads through the station; nothing imports it."""

from serving.api.app import create_app

__all__ = ["create_app"]
