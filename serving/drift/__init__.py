"""The drift room: per-part figures, the enrollment baseline and the Stability Index. Pure: imports no other room."""
