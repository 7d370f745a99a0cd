"""Does the model fit a board, and how fast will it run? See :func:`profile_model`."""

from facemask_edge.profile.budget import ARENA_MARGIN, profile_model, profile_table

__all__ = ["profile_model", "profile_table", "ARENA_MARGIN"]
