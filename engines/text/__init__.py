"""Text for the CTC models: the character set, the spoken-form normaliser, CTC decoders."""
