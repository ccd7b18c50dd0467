"""Fault drills: real processes under a Portal-like load, broken on purpose, then checked."""
