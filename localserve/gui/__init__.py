"""The tray app: the only package that imports PySide6.

It is a thin client of the daemon's control API (``localserve/daemon/client.py``); every call to the
daemon runs on a worker thread (``background.py``) and comes back to the GUI thread as a queued
signal, so the GUI thread never blocks on the network or the daemon.
"""
