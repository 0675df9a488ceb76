"""The operator's files read into a typed deployment: discovery, YAML, scopes, overrides, the
model and its validation, mounts and certificates checked, and rendering for display."""
