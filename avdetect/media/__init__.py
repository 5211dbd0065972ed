"""Media I/O: decoding any common container into 25 fps RGB frames and 16 kHz mono audio,
and writing H.264 + AAC mp4 files."""
