"""Flower deployment of ladalit: a localhost launcher (SuperLink + SuperNodes) and a probe app."""
