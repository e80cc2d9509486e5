"""`voxsight eval`: independent judges of generated speech (whisper, pocketsphinx, STOI, DNSMOS, silero-vad,
AV sync, speaker match, energy), one report for every system. The judges' packages (the `eval` extra)
are imported lazily inside this package only: node, training and guidance code never import it.
"""
