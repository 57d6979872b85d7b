"""Simulated users for demos, tests and analysts' histories.

``population`` is pure (seeded, time passed in); ``producer`` writes its events
to Kafka in real time or to a JSON Lines file; ``cli`` is ``engagement simulate``.
"""
