"""The app's management commands and the small helpers they share."""
