"""The fast loop: judge turns, mine failures, propose skill edits, gate them, apply them."""
