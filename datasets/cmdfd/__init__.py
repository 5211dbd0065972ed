"""The `cmdfd` dataset (CMDFD test set, manual download)."""
