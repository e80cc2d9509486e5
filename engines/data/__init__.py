"""The synthetic audio-visual speech corpus: text, phones, voices, speech, noise, talking faces, loaders."""
