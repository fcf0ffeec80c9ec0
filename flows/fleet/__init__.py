"""The fleet: signing keys, deploying bundles to stations, rolling back, and what runs where."""
