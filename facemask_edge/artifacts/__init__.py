"""The run folder's artifacts: the files each stage writes and the next one reads."""
