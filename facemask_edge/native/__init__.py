"""The native (host C) build: the firmware's portable C compiled and loaded on this computer."""
