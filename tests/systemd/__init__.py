"""taskworkerd's units under a real systemd, booted in a container."""
