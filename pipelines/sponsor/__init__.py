"""What sponsors receive: pseudonyms, the published snapshot, reading it back."""
