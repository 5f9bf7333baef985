"""The group model: one model for the consumer group (parts, deltas, merges, versions).

``parts`` holds the parts and their merge rules, ``model`` the merging worker's copy,
``worker`` a worker's deltas and applied versions, ``local`` a whole group in one process.
"""

from online_models.group.local import LocalGroup
from online_models.group.model import GroupModel
from online_models.group.parts import Delta, GroupPart
from online_models.group.worker import WorkerSync

__all__ = ["Delta", "GroupModel", "GroupPart", "LocalGroup", "WorkerSync"]
