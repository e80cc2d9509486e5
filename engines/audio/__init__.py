"""Audio features shared by the engines: the log-mel of ARCHITECTURE §4 and reading a clip's audio."""
