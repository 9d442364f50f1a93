"""The `ltx-backend` command line."""
