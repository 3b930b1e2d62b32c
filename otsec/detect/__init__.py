"""Detections: judge events and flows against a policy and a baseline (docs/detections.md).

``rules`` is the catalogue of stable rule ids, ``findings`` the aggregation and
suppressions, ``baseline`` the per-zone-pair learning, ``checker`` the streaming rules.
"""
