"""Loopback servers that speak each SaaS API's real wire format."""
