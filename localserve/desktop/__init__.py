"""Desktop integration without Qt: start at login, and the Linux menu entry and icons."""
