"""An independent reference model of the record rules, for tests only.

Short, slow and meant to be obviously correct: one plain object per user,
changed event by event; every judgement looks at every user; thresholds,
clock, de-duplication, erasure and config versions are written from
docs/CONTRACTS.md and docs/MODEL.md, not from the engine. It imports nothing
from ``tables``, ``streams`` or ``agents`` (``tests/unit/test_reference_agreement.py``
checks that), so a test that compares the engine with it can see a model bug.

- ``reference.records``: the decoded input records and the settings the rules read.
- ``reference.user``: one user's state and the effect of an event on it.
- ``reference.judge``: what the clock decides about a user, and the records emitted.
- ``reference.risk``: the MBG/NBD risk by numeric integration.
- ``reference.partition``: one input partition run in log order, with its outputs.
- ``reference.log``: the raw input log decoded (DLQ codes, signed control records) and run.
"""
