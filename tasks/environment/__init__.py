"""The disk-cleanup environment: scenarios, sandbox backends, episodes, rewards."""
