"""Reaching hosts: commands as data, the executors (this machine or SSH), the lock, the hub's
kept state, and the facts read from each host before anything is planned."""
