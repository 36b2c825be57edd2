"""What serving and training must agree on, token for token."""
